//! A report's raw histograms as an HdrHistogram interval log (`.hlog`): the standard format
//! HdrHistogram's own tools read (HistogramLogProcessor, HdrHistogram plotters), one tagged
//! histogram per figure covering the whole run, values in microseconds.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};

use crate::LoadError;
use crate::report::{Report, load};

/// Writes `report`'s histograms to `path`.
pub fn write(report: &Report, path: &Path) -> Result<(), LoadError> {
    let file_error = |message: String| LoadError::File {
        path: path.display().to_string(),
        message,
    };
    let mut out = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let start = UNIX_EPOCH + Duration::from_millis(report.run.started_unix_ms);
    let seconds = report.steps_s.values().sum::<f64>().max(0.001);
    {
        let mut log = IntervalLogWriterBuilder::new()
            .add_comment(&format!(
                "liveclass-load {} run {} parts {:?}: values in microseconds",
                report.version, report.run.run_id, report.parts
            ))
            .with_start_time(start)
            .with_base_time(start)
            .begin_log_with(&mut out, &mut serializer)
            .map_err(|e| file_error(format!("cannot write the log: {e}")))?;
        for (name, pairs) in report.histograms.named() {
            let h = load(pairs)?;
            let tag = Tag::new(name).ok_or_else(|| file_error(format!("bad tag {name}")))?;
            log.write_histogram(
                &h,
                Duration::ZERO,
                Duration::from_secs_f64(seconds),
                Some(tag),
            )
            .map_err(|e| file_error(format!("cannot encode {name}: {e}")))?;
        }
    }
    std::fs::File::create(path)
        .and_then(|mut f| f.write_all(&out))
        .map_err(|e| file_error(format!("cannot write: {e}")))
}

/// Reads the histogram tagged `tag` back from an interval log.
pub fn read(path: &Path, tag: &str) -> Result<hdrhistogram::Histogram<u64>, LoadError> {
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    let file_error = |message: String| LoadError::File {
        path: path.display().to_string(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| file_error(format!("cannot read: {e}")))?;
    for entry in IntervalLogIterator::new(&bytes) {
        let entry = entry.map_err(|e| file_error(format!("not an interval log: {e:?}")))?;
        if let LogEntry::Interval(h) = entry
            && h.tag().map(|t| t.as_str()) == Some(tag)
        {
            let raw = base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                h.encoded_histogram(),
            )
            .map_err(|e| file_error(format!("bad base64: {e}")))?;
            return Deserializer::new()
                .deserialize(&mut raw.as_slice())
                .map_err(|e| file_error(format!("bad histogram: {e:?}")));
        }
    }
    Err(file_error(format!("no histogram tagged {tag}")))
}
