//! Cheap checks of staged artifacts before a job is accepted, so a researcher hears "this is
//! not TorchScript" at submit time rather than from a failed run minutes later. Only headers
//! and the zip directory are read, never the whole file.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A safetensors header entry.
#[derive(Debug, Deserialize)]
struct TensorHeader {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// Rows and dtypes of the training tensors, as read from the header.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSummary {
    pub rows: u64,
    pub x_dtype: String,
    pub y_dtype: String,
}

/// Largest safetensors header we accept: the format's own cap of 100 MB, which the worker's
/// reader (the `safetensors` crate) enforces.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Bytes per element of the dtypes training accepts; `None` for any other.
fn dtype_bytes(dtype: &str) -> Option<u64> {
    match dtype {
        "F64" | "I64" => Some(8),
        "F32" | "I32" => Some(4),
        "F16" | "BF16" | "I16" => Some(2),
        "I8" | "U8" | "BOOL" => Some(1),
        _ => None,
    }
}

/// Reads the length prefix of a safetensors file.
pub fn header_len(prefix: &[u8]) -> Result<u64, String> {
    let bytes: [u8; 8] = prefix
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or("data is shorter than a safetensors header")?;
    let n = u64::from_le_bytes(bytes);
    if n == 0 || n > MAX_HEADER_BYTES {
        return Err(format!("data is not safetensors (header length {n})"));
    }
    Ok(n)
}

/// Checks a safetensors header: `x` and `y` present, same number of rows, known dtypes, the
/// tensors tiling the body exactly (as the worker's reader demands); `x_val`/`y_val` likewise
/// when given.
pub fn check_data(header_json: &[u8], file_size: u64, header_len: u64) -> Result<DataSummary, String> {
    if header_json.first() != Some(&b'{') {
        return Err("data is not safetensors: the header does not start with `{`".into());
    }
    let raw: BTreeMap<String, serde_json::Value> = serde_json::from_slice(header_json)
        .map_err(|e| format!("data is not safetensors: header is not JSON ({e})"))?;
    let mut tensors = BTreeMap::new();
    let mut ranges = Vec::with_capacity(raw.len());
    let body = file_size.saturating_sub(8).saturating_sub(header_len);
    for (name, value) in raw {
        if name == "__metadata__" {
            if !value.is_null() && serde_json::from_value::<BTreeMap<String, String>>(value).is_err() {
                return Err("data is not safetensors: its __metadata__ is not a map of strings".into());
            }
            continue;
        }
        let t: TensorHeader =
            serde_json::from_value(value).map_err(|e| format!("data tensor `{name}` has a malformed header: {e}"))?;
        let Some(item_bytes) = dtype_bytes(&t.dtype) else {
            return Err(format!("data tensor `{name}` has unsupported dtype {}", t.dtype));
        };
        // Every number here comes from the uploader: checked arithmetic only.
        let (start, end) = t.data_offsets;
        if start > end || end > body {
            return Err(format!("data tensor `{name}` points outside the file"));
        }
        let expected = t.shape.iter().try_fold(item_bytes, |acc, &d| acc.checked_mul(d));
        if expected != Some(end - start) {
            return Err(format!(
                "data tensor `{name}` of shape {:?} and dtype {} does not fill its {} bytes",
                t.shape,
                t.dtype,
                end - start
            ));
        }
        ranges.push((start, end));
        tensors.insert(name, t);
    }
    // Sorted, each tensor starts where the previous ended and the last ends the file: no gaps,
    // overlaps or trailing bytes, which safetensors readers refuse.
    ranges.sort_unstable();
    let mut at = 0u64;
    for (start, end) in ranges {
        if start != at {
            return Err("data is not safetensors: its tensors overlap or leave gaps".into());
        }
        at = end;
    }
    if at != body {
        return Err("data is not safetensors: bytes follow the last tensor".into());
    }
    let rows = |name: &str| -> Result<u64, String> {
        let t = tensors
            .get(name)
            .ok_or_else(|| format!("data has no tensor `{name}` (expected `x` and `y`)"))?;
        t.shape
            .first()
            .copied()
            .ok_or_else(|| format!("data tensor `{name}` is a scalar; it needs one row per sample"))
    };
    let (x, y) = (rows("x")?, rows("y")?);
    if x != y {
        return Err(format!("x has {x} rows but y has {y}"));
    }
    if x == 0 {
        return Err("data has no samples".into());
    }
    if tensors.contains_key("x_val") || tensors.contains_key("y_val") {
        let (xv, yv) = (rows("x_val")?, rows("y_val")?);
        if xv != yv {
            return Err(format!("x_val has {xv} rows but y_val has {yv}"));
        }
    }
    Ok(DataSummary {
        rows: x,
        x_dtype: tensors["x"].dtype.clone(),
        y_dtype: tensors["y"].dtype.clone(),
    })
}

/// A TorchScript archive is a zip whose directory lists `<name>/code/` entries and a
/// `constants.pkl`; a pickled state dict or any other file lacks them. `head` is the file's
/// first bytes, `tail` its last (where the zip central directory lives).
pub fn check_model(head: &[u8], tail: &[u8]) -> Result<(), String> {
    if !head.starts_with(b"PK\x03\x04") {
        return Err("model is not a TorchScript archive (not a zip file); submit torch.jit.script(model) or torch.jit.trace(model, example)".into());
    }
    let has = |needle: &[u8]| tail.windows(needle.len()).any(|w| w == needle);
    if !(has(b"/code/") && has(b"constants.pkl")) {
        return Err("model is not TorchScript: the archive has no code/ (was it saved with torch.save instead of torch.jit.save?)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(json: &str) -> (Vec<u8>, u64) {
        (json.as_bytes().to_vec(), json.len() as u64)
    }

    #[test]
    fn data_rows_must_match() {
        let (h, n) = header(
            r#"{"x":{"dtype":"F32","shape":[3,2],"data_offsets":[0,24]},"y":{"dtype":"I64","shape":[2],"data_offsets":[24,40]}}"#,
        );
        let e = check_data(&h, 8 + n + 40, n).unwrap_err();
        assert_eq!(e, "x has 3 rows but y has 2");
        let (h, n) = header(
            r#"{"x":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"y":{"dtype":"I64","shape":[2],"data_offsets":[16,32]}}"#,
        );
        assert_eq!(check_data(&h, 8 + n + 32, n).unwrap().rows, 2);
        assert!(check_data(&h, 8 + n + 31, n).unwrap_err().contains("outside"));
        assert!(check_data(b"{\"x\":1}", 100, 7).is_err());
        // Hostile offsets and shapes are refused, never overflow.
        let (h, n) = header(
            r#"{"x":{"dtype":"F32","shape":[2,2],"data_offsets":[0,18446744073709551615]},"y":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}"#,
        );
        assert!(check_data(&h, 8 + n + 32, n).unwrap_err().contains("outside"));
        let (h, n) = header(
            r#"{"x":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,16]},"y":{"dtype":"I64","shape":[2],"data_offsets":[16,32]}}"#,
        );
        assert!(check_data(&h, 8 + n + 32, n).unwrap_err().contains("does not fill"));
        assert!(check_data(&h, 0, u64::MAX).is_err());
        assert!(check_data(b"{not json", 100, 9).unwrap_err().contains("not JSON"));
        // What the worker's safetensors reader refuses is refused here, not minutes later.
        let (h, n) = header(
            r#"{"x":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"y":{"dtype":"I64","shape":[2],"data_offsets":[24,40]}}"#,
        );
        assert!(check_data(&h, 8 + n + 40, n).unwrap_err().contains("gaps"));
        let (h, n) = header(
            r#"{"x":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"y":{"dtype":"I32","shape":[2],"data_offsets":[8,16]}}"#,
        );
        assert!(check_data(&h, 8 + n + 16, n).unwrap_err().contains("overlap"));
        let (h, n) = header(
            r#"{"x":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"y":{"dtype":"I64","shape":[2],"data_offsets":[16,32]}}"#,
        );
        assert!(check_data(&h, 8 + n + 33, n).unwrap_err().contains("follow"));
        let spaced = [b" ".as_slice(), &h].concat();
        assert!(check_data(&spaced, 8 + n + 33, n + 1).unwrap_err().contains("start"));
    }

    #[test]
    fn model_must_be_torchscript_zip() {
        assert!(check_model(b"\x80\x02pickle", b"").unwrap_err().contains("not a zip"));
        assert!(check_model(b"PK\x03\x04", b"archive/data.pkl")
            .unwrap_err()
            .contains("torch.save"));
        assert!(check_model(b"PK\x03\x04", b"m/code/__torch__.py m/constants.pkl").is_ok());
        assert!(header_len(&[0; 4]).is_err());
        assert!(header_len(&u64::MAX.to_le_bytes()).is_err());
    }
}
