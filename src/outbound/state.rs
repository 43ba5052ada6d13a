//! How a delivery found `sending` after a crash is resolved: from how far
//! its attempt got (recorded before each step) and what the partner's side
//! holds now. Never by uploading a second copy under another name, and
//! never by sending again what may already have been taken. Pure.

use crate::model::UploadProgress;

/// What the partner's upload directory holds for a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteSide {
    /// The temporary name exists.
    pub temp: bool,
    /// The final name exists, with this size.
    pub final_size: Option<u64>,
}

/// What to do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// The file is in place under its final name: delivered (its done
    /// marker is written if missing).
    Delivered,
    /// Nothing was renamed into place: remove the temporary file, if any,
    /// and upload again (the attempt checks the final name as always).
    UploadAgain,
    /// The bytes were uploaded, but neither name is there now: the rename
    /// may have happened and the partner taken the file. Sending again
    /// could deliver it twice, so the delivery fails with that said, for an
    /// operator to check with the partner (and `resend` if need be).
    Ambiguous,
}

/// Decide. `size` is the delivery's size.
pub fn resolve(progress: Option<UploadProgress>, remote: RemoteSide, size: u64) -> Resolution {
    match progress {
        // The rename answered: the file was in place, whatever became of it
        // since (the partner may have taken it already).
        Some(UploadProgress::Renamed) => Resolution::Delivered,
        // The rename may or may not have happened.
        Some(UploadProgress::Uploaded) => match remote {
            RemoteSide { temp: true, .. } => Resolution::UploadAgain,
            RemoteSide {
                temp: false,
                final_size: Some(s),
            } if s == size => Resolution::Delivered,
            RemoteSide {
                temp: false,
                final_size: Some(_),
            } => Resolution::UploadAgain,
            RemoteSide {
                temp: false,
                final_size: None,
            } => Resolution::Ambiguous,
        },
        // Never renamed: a final name there now is not this delivery's; the
        // new attempt's check finds it.
        Some(UploadProgress::Checked) | None => Resolution::UploadAgain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_progress_and_remote_side() {
        use Resolution::*;
        use UploadProgress::*;
        const SIZE: u64 = 606;
        let (n, right, wrong) = (None, Some(SIZE), Some(7));
        // progress, temporary name there, final name's size → what to do
        let table = [
            (None, false, n, UploadAgain),
            (None, true, n, UploadAgain),
            (None, false, right, UploadAgain),
            (None, true, wrong, UploadAgain),
            (Some(Checked), false, n, UploadAgain),
            (Some(Checked), true, n, UploadAgain),
            (Some(Checked), false, right, UploadAgain),
            (Some(Checked), true, right, UploadAgain),
            (Some(Uploaded), true, n, UploadAgain),
            (Some(Uploaded), true, right, UploadAgain),
            (Some(Uploaded), true, wrong, UploadAgain),
            (Some(Uploaded), false, right, Delivered),
            (Some(Uploaded), false, wrong, UploadAgain),
            (Some(Uploaded), false, n, Ambiguous),
            (Some(Renamed), false, right, Delivered),
            (Some(Renamed), false, n, Delivered),
            (Some(Renamed), true, wrong, Delivered),
            (Some(Renamed), false, wrong, Delivered),
        ];
        for (progress, temp, final_size, want) in table {
            let got = resolve(progress, RemoteSide { temp, final_size }, SIZE);
            assert_eq!(got, want, "{progress:?} temp={temp} final={final_size:?}");
        }
    }
}
