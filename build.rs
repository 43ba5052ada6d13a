// `sqlx::migrate!` embeds the migrations: adding or changing one must
// rebuild the crate.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
