//! Delivery receipts: `<data-dir>/outbox-receipts/<partner>/<name>.delivery`
//! tells the settlement system that dropped a file into an outbox what
//! became of it (recorded, delivered, collected, failed, invalid,
//! duplicate), rewritten from the ledger's row at each change.

use std::path::{Path, PathBuf};

use crate::intake::Gateway;
use crate::intake::receipt::{fitting_name, write_text};
use crate::ledger::DeliveryRow;
use crate::model::DeliverySource;

/// Where a partner's delivery receipts go.
pub fn dir(data_dir: &Path, partner: &str) -> PathBuf {
    data_dir.join("outbox-receipts").join(partner)
}

/// The receipt's text: `key=value` lines.
pub fn render(d: &DeliveryRow) -> String {
    let one_line = |s: &str| s.replace(['\r', '\n'], " ");
    let mut t = String::new();
    t.push_str(&format!("name={}\n", one_line(&d.name)));
    t.push_str(&format!("delivery_id={}\n", d.id));
    t.push_str(&format!("state={}\n", d.state));
    t.push_str(&format!("checksum={}\n", d.checksum));
    match &d.endpoint {
        Some(e) => t.push_str(&format!("endpoint={e}\n")),
        None => t.push_str("endpoint=(collected from /outbox)\n"),
    }
    if let Some(p) = &d.remote_path {
        t.push_str(&format!("remote_path={}\n", one_line(p)));
    }
    if let Some(e) = &d.error {
        t.push_str(&format!("error={}\n", one_line(e)));
    }
    if let Some(r) = d.related_delivery_id {
        t.push_str(&format!("related_delivery_id={r}\n"));
    }
    t
}

impl Gateway {
    /// Rewrite the receipt of a delivery that came from an outbox. A failure
    /// is logged: the ledger holds the truth, `deliveries` shows it.
    pub async fn delivery_receipt(&self, id: i64) {
        let row = match self.ledger.delivery(id).await {
            Ok(Some(r)) if r.source == DeliverySource::Outbox => r,
            Ok(_) => return,
            Err(e) => {
                tracing::error!(delivery_id = id, error = %e, "cannot read the delivery for its receipt");
                return;
            }
        };
        let path =
            dir(&self.config.data_dir, &row.partner).join(fitting_name(&row.name, ".delivery"));
        let (text, mode) = (render(&row), self.config.receipt_mode);
        let written = tokio::task::spawn_blocking(move || write_text(&path, &text, mode)).await;
        match written {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!(delivery_id = id, error = %e, "cannot write the delivery receipt")
            }
            Err(e) => tracing::error!(delivery_id = id, error = %e, "delivery receipt task failed"),
        }
    }
}
