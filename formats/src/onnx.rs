//! ONNX models: a protobuf `ModelProto`, checked with a minimal walk of the protobuf wire
//! format. Every tag, varint and length is bounds-checked against the enclosing message;
//! `ModelProto` must carry an `ir_version` and a `graph`; the graph's initializers
//! (`TensorProto`) are read for their shape, type, inline data size and external-data
//! references, which [`check_external`] then checks against the files next to the model.
//!
//! Field numbers are those of `onnx.proto3`.

use std::io::{Read, Seek};
use std::path::{Component, Path};

use crate::error::FormatError;
use crate::facts::{Facts, Tally};
use crate::reader::Reader;

/// Wire types.
const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;
/// Protobuf field numbers are below 2^29.
const MAX_FIELD: u64 = (1 << 29) - 1;
/// Strings longer than this are skipped rather than kept.
const MAX_KEPT_STRING: u64 = 4096;
/// `TensorProto.DataLocation.EXTERNAL`.
const EXTERNAL: u64 = 1;

/// A tensor whose data lives in another file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalData {
    /// The tensor's name.
    pub tensor: String,
    /// The file, relative to the model's directory.
    pub location: String,
    /// Byte offset in that file.
    pub offset: u64,
    /// Byte length, when recorded.
    pub length: Option<u64>,
    /// Bytes the tensor's shape and type need, when the type has a fixed size.
    pub expected_bytes: Option<u64>,
}

/// What a successful walk found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OnnxSummary {
    /// `ModelProto.ir_version`.
    pub ir_version: u64,
    /// Graph nodes.
    pub nodes: u64,
    /// Graph initializers (weights).
    pub initializers: u64,
    /// Graph inputs.
    pub inputs: u64,
    /// Graph outputs.
    pub outputs: u64,
    /// Tensors stored in external files.
    pub external: Vec<ExternalData>,
}

/// A field as the wire walk sees it: number, and its value or the extent of its bytes.
#[derive(Debug, Clone, Copy)]
enum Field {
    /// A varint or fixed-width value, already read.
    Scalar { number: u64, wire: u8, value: u64 },
    /// A length-delimited field whose bytes are `[start, end)`, not yet read.
    Len { number: u64, end: u64 },
}

impl Field {
    fn number(&self) -> u64 {
        match self {
            Field::Scalar { number, .. } | Field::Len { number, .. } => *number,
        }
    }
}

/// Walks the ONNX model of `len` bytes read from `inner`, recording parameters, tensor
/// count, dominant initializer type and the opset in `facts`.
pub fn check<R: Read + Seek>(
    inner: R,
    len: u64,
    facts: &mut Facts,
) -> Result<OnnxSummary, FormatError> {
    let mut r = Reader::new(inner, len);
    if len == 0 {
        return Err(r.fail("the file is empty"));
    }
    let mut summary = OnnxSummary::default();
    let mut ir_version = None;
    let mut has_graph = false;
    let mut types = Tally::default();
    r.walk(len, "ModelProto", |r, field| match field {
        Field::Scalar {
            number: 1,
            wire: VARINT,
            value,
        } => {
            ir_version = Some(value);
            Ok(true)
        }
        Field::Len { number: 2, end } => {
            if let Some(producer) = r.kept_string(end, "producer_name")? {
                facts.detail("onnx.producer", producer);
            }
            Ok(true)
        }
        Field::Len { number: 7, end } => {
            if has_graph {
                return Err(r.fail("the model has two graphs"));
            }
            has_graph = true;
            r.graph(end, &mut summary, &mut types, facts)?;
            Ok(true)
        }
        Field::Len { number: 8, end } => {
            let (domain, version) = r.opset(end)?;
            let domain = if domain.is_empty() {
                "ai.onnx".to_string()
            } else {
                domain
            };
            facts.detail(&format!("onnx.opset.{domain}"), version);
            Ok(true)
        }
        f if matches!(f.number(), 1 | 7 | 8) => Err(r.fail(format!(
            "ModelProto field {} has the wrong wire type",
            f.number()
        ))),
        _ => Ok(false),
    })?;
    let Some(ir_version) = ir_version else {
        return Err(r.fail("the model has no ir_version (ModelProto field 1): not an ONNX model"));
    };
    if !(1..=100).contains(&ir_version) {
        return Err(FormatError {
            offset: 0,
            problem: format!("ir_version {ir_version} is not a plausible ONNX IR version"),
        });
    }
    if !has_graph {
        return Err(r.fail("the model has no graph (ModelProto field 7)"));
    }
    summary.ir_version = ir_version;
    facts.detail("onnx.ir_version", ir_version);
    facts.detail("onnx.nodes", summary.nodes);
    facts.detail("onnx.inputs", summary.inputs);
    facts.detail("onnx.outputs", summary.outputs);
    if !summary.external.is_empty() {
        facts.detail("onnx.external_tensors", summary.external.len());
    }
    facts.add_tensors(summary.initializers);
    if facts.quantization.is_none() {
        facts.quantization = types.dominant();
    }
    Ok(summary)
}

/// Checks the external-data references of a model in `dir`: each file must lie inside
/// `dir` and hold the tensor's bytes. Returns the problem, if any.
pub fn check_external(dir: &Path, external: &[ExternalData]) -> Result<(), String> {
    for e in external {
        let rel = Path::new(&e.location);
        if e.location.is_empty()
            || rel
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(format!(
                "tensor '{}' points at external data '{}', which is not a plain relative path",
                e.tensor, e.location
            ));
        }
        let file = dir.join(rel);
        let size = match std::fs::metadata(&file) {
            Ok(m) if m.is_file() => m.len(),
            _ => {
                return Err(format!(
                    "tensor '{}' needs the external data file {}, which is missing",
                    e.tensor,
                    file.display()
                ))
            }
        };
        let length = e.length.or(e.expected_bytes).unwrap_or(0);
        if e.offset.checked_add(length).is_none_or(|end| end > size) {
            return Err(format!(
                "tensor '{}' needs bytes {}..{} of {}, which has only {size} bytes \
                 (truncated download?)",
                e.tensor,
                e.offset,
                e.offset.saturating_add(length),
                file.display()
            ));
        }
    }
    Ok(())
}

/// Bits per element of a `TensorProto.DataType`, with its name; `None` for unknown types
/// and strings.
fn data_type(ty: u64) -> Option<(&'static str, u64)> {
    Some(match ty {
        1 => ("F32", 32),
        2 => ("U8", 8),
        3 => ("I8", 8),
        4 => ("U16", 16),
        5 => ("I16", 16),
        6 => ("I32", 32),
        7 => ("I64", 64),
        9 => ("BOOL", 8),
        10 => ("F16", 16),
        11 => ("F64", 64),
        12 => ("U32", 32),
        13 => ("U64", 64),
        14 => ("C64", 64),
        15 => ("C128", 128),
        16 => ("BF16", 16),
        17..=20 => ("F8", 8),
        21 => ("U4", 4),
        22 => ("I4", 4),
        23 => ("F4", 4),
        _ => return None,
    })
}

/// Protobuf walking on the shared reader.
impl<R: Read + Seek> Reader<R> {
    /// Reads a base-128 varint of at most 10 bytes.
    fn varint(&mut self, what: &str) -> Result<u64, FormatError> {
        let mut value = 0u64;
        for i in 0..10 {
            let b = self.u8(what)?;
            if i == 9 && b > 1 {
                return Err(self.fail(format!("{what}: a varint overflows 64 bits")));
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.fail(format!("{what}: a varint longer than 10 bytes")))
    }

    /// Walks the fields of a message that ends at `end`. `on_field` returns whether it
    /// consumed a length-delimited field (exactly to its end); unconsumed ones are
    /// skipped.
    fn walk(
        &mut self,
        end: u64,
        what: &str,
        mut on_field: impl FnMut(&mut Self, Field) -> Result<bool, FormatError>,
    ) -> Result<(), FormatError> {
        while self.pos < end {
            let key = self.varint(what)?;
            let (number, wire) = (key >> 3, (key & 7) as u8);
            if number == 0 || number > MAX_FIELD {
                return Err(self.fail(format!("{what} has an invalid field number {number}")));
            }
            let field = match wire {
                VARINT => Field::Scalar {
                    number,
                    wire,
                    value: self.varint(what)?,
                },
                I64 => Field::Scalar {
                    number,
                    wire,
                    value: self.u64(what)?,
                },
                I32 => Field::Scalar {
                    number,
                    wire,
                    value: u64::from(self.u32(what)?),
                },
                LEN => {
                    let n = self.varint(what)?;
                    let left = end.saturating_sub(self.pos);
                    if n > left {
                        return Err(self.fail(format!(
                            "{what} field {number} claims {n} bytes but only {left} remain in \
                             the message (truncated or corrupt)"
                        )));
                    }
                    Field::Len {
                        number,
                        end: self.pos + n,
                    }
                }
                3 | 4 => {
                    return Err(self.fail(format!(
                        "{what} field {number} uses the deprecated group encoding"
                    )))
                }
                other => {
                    return Err(self.fail(format!(
                        "{what} field {number} has invalid wire type {other}"
                    )))
                }
            };
            if self.pos > end {
                return Err(self.fail(format!("{what} field {number} runs past its message")));
            }
            let consumed = on_field(self, field)?;
            if let Field::Len { end: field_end, .. } = field {
                if !consumed {
                    self.skip(field_end - self.pos, what)?;
                } else if self.pos != field_end {
                    return Err(self.fail(format!(
                        "{what} field {number} does not end where its length says"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Reads a string field ending at `end`, or skips it when longer than
    /// [`MAX_KEPT_STRING`].
    fn kept_string(&mut self, end: u64, what: &str) -> Result<Option<String>, FormatError> {
        let n = end - self.pos;
        if n > MAX_KEPT_STRING {
            self.skip(n, what)?;
            return Ok(None);
        }
        let bytes = self.bytes(n, what)?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// `OperatorSetIdProto`: domain (1), version (2).
    fn opset(&mut self, end: u64) -> Result<(String, u64), FormatError> {
        let (mut domain, mut version) = (String::new(), 0);
        self.walk(end, "OperatorSetIdProto", |r, field| match field {
            Field::Len { number: 1, end } => {
                domain = r.kept_string(end, "an opset domain")?.unwrap_or_default();
                Ok(true)
            }
            Field::Scalar {
                number: 2, value, ..
            } => {
                version = value;
                Ok(true)
            }
            _ => Ok(false),
        })?;
        Ok((domain, version))
    }

    /// `GraphProto`: node (1), initializer (5), input (11), output (12). Nodes, inputs
    /// and outputs are walked at the wire level; initializers are read.
    fn graph(
        &mut self,
        end: u64,
        summary: &mut OnnxSummary,
        types: &mut Tally,
        facts: &mut Facts,
    ) -> Result<(), FormatError> {
        self.walk(end, "GraphProto", |r, field| match field {
            Field::Len { number: 1, end } => {
                summary.nodes += 1;
                r.walk(end, "NodeProto", |_, _| Ok(false))?;
                Ok(true)
            }
            Field::Len { number: 5, end } => {
                summary.initializers += 1;
                r.tensor(end, summary, types, facts)?;
                Ok(true)
            }
            Field::Len {
                number: n @ (11 | 12),
                end,
            } => {
                if n == 11 {
                    summary.inputs += 1;
                } else {
                    summary.outputs += 1;
                }
                r.walk(end, "ValueInfoProto", |_, _| Ok(false))?;
                Ok(true)
            }
            f if matches!(f.number(), 1 | 5 | 11 | 12) => Err(r.fail(format!(
                "GraphProto field {} has the wrong wire type",
                f.number()
            ))),
            _ => Ok(false),
        })
    }

    /// `TensorProto`: dims (1), data_type (2), name (8), raw_data (9), external_data (13),
    /// data_location (14).
    fn tensor(
        &mut self,
        end: u64,
        summary: &mut OnnxSummary,
        types: &mut Tally,
        facts: &mut Facts,
    ) -> Result<(), FormatError> {
        let start = self.pos;
        let mut elements: Option<u64> = Some(1);
        let mut ty = 0u64;
        let mut name = String::new();
        let mut raw_len: Option<u64> = None;
        let mut location = 0u64;
        let mut entries: Vec<(String, String)> = Vec::new();
        let mut dim = |d: u64, r: &Self| -> Result<(), FormatError> {
            if i64::try_from(d).is_err() {
                return Err(r.fail(format!("a tensor has a negative dimension ({})", d as i64)));
            }
            elements = elements.and_then(|e| e.checked_mul(d));
            Ok(())
        };
        self.walk(end, "TensorProto", |r, field| match field {
            Field::Scalar {
                number: 1,
                wire: VARINT,
                value,
            } => {
                dim(value, r)?;
                Ok(true)
            }
            Field::Len { number: 1, end } => {
                while r.pos < end {
                    let d = r.varint("packed tensor dims")?;
                    dim(d, r)?;
                }
                Ok(true)
            }
            Field::Scalar {
                number: 2, value, ..
            } => {
                ty = value;
                Ok(true)
            }
            Field::Len { number: 8, end } => {
                name = r.kept_string(end, "a tensor name")?.unwrap_or_default();
                Ok(true)
            }
            Field::Len { number: 9, end } => {
                raw_len = Some(end - r.pos);
                Ok(false)
            }
            Field::Len { number: 13, end } => {
                entries.push(r.string_entry(end)?);
                Ok(true)
            }
            Field::Scalar {
                number: 14, value, ..
            } => {
                location = value;
                Ok(true)
            }
            _ => Ok(false),
        })?;
        let Some(elements) = elements else {
            return Err(FormatError {
                offset: start,
                problem: format!("tensor '{name}' has a shape whose element count overflows"),
            });
        };
        let kind = data_type(ty);
        let expected_bytes =
            kind.and_then(|(_, bits)| elements.checked_mul(bits).map(|b| b.div_ceil(8)));
        facts.add_parameters(elements);
        types.add(kind.map_or("other", |(n, _)| n), elements);
        if location == EXTERNAL {
            let get = |key: &str| entries.iter().find(|(k, _)| k == key).map(|(_, v)| v);
            let number = |key: &str| -> Result<Option<u64>, FormatError> {
                get(key)
                    .map(|v| {
                        v.parse::<u64>().map_err(|_| FormatError {
                            offset: start,
                            problem: format!(
                                "tensor '{name}' has external {key} '{v}', not a number"
                            ),
                        })
                    })
                    .transpose()
            };
            let Some(file) = get("location") else {
                return Err(FormatError {
                    offset: start,
                    problem: format!("tensor '{name}' is stored externally but names no location"),
                });
            };
            summary.external.push(ExternalData {
                tensor: name.clone(),
                location: file.clone(),
                offset: number("offset")?.unwrap_or(0),
                length: number("length")?,
                expected_bytes,
            });
        } else if let (Some(raw), Some(expected)) = (raw_len, expected_bytes) {
            if raw != expected {
                return Err(FormatError {
                    offset: start,
                    problem: format!(
                        "tensor '{name}' has {elements} elements of type {ty}, which need \
                         {expected} bytes, but its raw_data has {raw}"
                    ),
                });
            }
        }
        Ok(())
    }

    /// `StringStringEntryProto`: key (1), value (2).
    fn string_entry(&mut self, end: u64) -> Result<(String, String), FormatError> {
        let (mut key, mut value) = (String::new(), String::new());
        self.walk(end, "StringStringEntryProto", |r, field| match field {
            Field::Len { number: 1, end } => {
                key = r
                    .kept_string(end, "an external-data key")?
                    .unwrap_or_default();
                Ok(true)
            }
            Field::Len { number: 2, end } => {
                value = r
                    .kept_string(end, "an external-data value")?
                    .unwrap_or_default();
                Ok(true)
            }
            _ => Ok(false),
        })?;
        Ok((key, value))
    }
}

/// Builders for small ONNX models (protobuf encoded by hand).
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    /// Appends a varint.
    pub fn varint(out: &mut Vec<u8>, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    /// Appends a varint field.
    pub fn field_varint(out: &mut Vec<u8>, number: u64, v: u64) {
        varint(out, number << 3);
        varint(out, v);
    }

    /// Appends a length-delimited field.
    pub fn field_bytes(out: &mut Vec<u8>, number: u64, bytes: &[u8]) {
        varint(out, (number << 3) | 2);
        varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }

    /// A float tensor initializer with inline raw data, or external data in `external`
    /// (`location`, `offset`, `length`).
    pub fn tensor(name: &str, dims: &[u64], external: Option<(&str, u64, u64)>) -> Vec<u8> {
        let mut t = Vec::new();
        for d in dims {
            field_varint(&mut t, 1, *d);
        }
        field_varint(&mut t, 2, 1); // FLOAT
        field_bytes(&mut t, 8, name.as_bytes());
        match external {
            None => {
                let n: u64 = dims.iter().product();
                field_bytes(&mut t, 9, &vec![0u8; (n * 4) as usize]);
            }
            Some((location, offset, length)) => {
                for (k, v) in [
                    ("location", location.to_string()),
                    ("offset", offset.to_string()),
                    ("length", length.to_string()),
                ] {
                    let mut entry = Vec::new();
                    field_bytes(&mut entry, 1, k.as_bytes());
                    field_bytes(&mut entry, 2, v.as_bytes());
                    field_bytes(&mut t, 13, &entry);
                }
                field_varint(&mut t, 14, 1);
            }
        }
        t
    }

    /// A model: ir_version 8, opset 17, a graph of one `MatMul` node with the given
    /// initializers, one input and one output.
    pub fn model(initializers: &[Vec<u8>]) -> Vec<u8> {
        let mut graph = Vec::new();
        let mut node = Vec::new();
        field_bytes(&mut node, 1, b"x");
        field_bytes(&mut node, 1, b"w");
        field_bytes(&mut node, 2, b"y");
        field_bytes(&mut node, 4, b"MatMul");
        field_bytes(&mut graph, 1, &node);
        field_bytes(&mut graph, 2, b"g");
        for t in initializers {
            field_bytes(&mut graph, 5, t);
        }
        let mut input = Vec::new();
        field_bytes(&mut input, 1, b"x");
        field_bytes(&mut graph, 11, &input);
        let mut output = Vec::new();
        field_bytes(&mut output, 1, b"y");
        field_bytes(&mut graph, 12, &output);

        let mut m = Vec::new();
        field_varint(&mut m, 1, 8);
        field_bytes(&mut m, 2, b"runanywhere-tests");
        field_bytes(&mut m, 7, &graph);
        let mut opset = Vec::new();
        field_varint(&mut opset, 2, 17);
        field_bytes(&mut m, 8, &opset);
        m
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::testing::*;
    use super::*;

    fn run(bytes: &[u8]) -> Result<(OnnxSummary, Facts), FormatError> {
        let mut facts = Facts::default();
        check(Cursor::new(bytes), bytes.len() as u64, &mut facts).map(|s| (s, facts))
    }

    fn problem(bytes: &[u8]) -> String {
        match run(bytes) {
            Ok(s) => panic!("expected an error, got {s:?}"),
            Err(e) => e.problem,
        }
    }

    #[test]
    fn a_small_model_gives_its_facts() {
        let bytes = model(&[tensor("w", &[4, 2], None), tensor("b", &[2], None)]);
        let (s, facts) = run(&bytes).expect("valid");
        assert_eq!(s.ir_version, 8);
        assert_eq!((s.nodes, s.initializers, s.inputs, s.outputs), (1, 2, 1, 1));
        assert_eq!(facts.parameters, Some(10));
        assert_eq!(facts.tensors, Some(2));
        assert_eq!(facts.quantization.as_deref(), Some("F32"));
        assert_eq!(facts.details["onnx.opset.ai.onnx"], "17");
        assert_eq!(facts.details["onnx.producer"], "runanywhere-tests");
    }

    #[test]
    fn structure_errors_are_refused() {
        assert!(problem(&[]).contains("empty"));
        // A graph-less model.
        let mut m = Vec::new();
        field_varint(&mut m, 1, 8);
        assert!(problem(&m).contains("no graph"));
        // No ir_version.
        let mut m = Vec::new();
        field_bytes(&mut m, 7, &[]);
        assert!(problem(&m).contains("no ir_version"));
        // A length past the end.
        let mut m = Vec::new();
        field_varint(&mut m, 1, 8);
        varint(&mut m, (7 << 3) | 2);
        varint(&mut m, 1000);
        assert!(problem(&m).contains("claims 1000 bytes"));
        // Group wire type, invalid wire type, field 0, endless varint.
        assert!(problem(&[0x0b]).contains("group"));
        assert!(problem(&[0x0e]).contains("wire type 6"));
        assert!(problem(&[0x00]).contains("field number 0"));
        assert!(
            problem(&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
                .contains("varint")
        );
        // Raw data that does not match the shape.
        let mut t = tensor("w", &[4], None);
        t.extend_from_slice(&{
            let mut extra = Vec::new();
            field_bytes(&mut extra, 9, &[0; 3]);
            extra
        });
        assert!(problem(&model(&[t])).contains("raw_data has 3"));
    }

    #[test]
    fn external_data_is_checked_against_the_files() {
        let bytes = model(&[tensor("w", &[4], Some(("w.bin", 0, 16)))]);
        let (s, _) = run(&bytes).expect("valid");
        assert_eq!(s.external.len(), 1);
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = check_external(dir.path(), &s.external).expect_err("missing");
        assert!(missing.contains("missing"), "{missing}");
        std::fs::write(dir.path().join("w.bin"), [0u8; 10]).expect("write");
        let short = check_external(dir.path(), &s.external).expect_err("short");
        assert!(short.contains("only 10 bytes"), "{short}");
        std::fs::write(dir.path().join("w.bin"), [0u8; 16]).expect("write");
        assert_eq!(check_external(dir.path(), &s.external), Ok(()));
        let escape = model(&[tensor("w", &[4], Some(("../w.bin", 0, 16)))]);
        let (s, _) = run(&escape).expect("valid");
        assert!(check_external(dir.path(), &s.external)
            .expect_err("escape")
            .contains("relative"));
    }
}
