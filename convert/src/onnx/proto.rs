//! The subset of `onnx.proto` a converted decoder needs, as `prost` messages.
//!
//! Written by hand (no `protoc`, no build script) with the field numbers of
//! [`onnx.proto`](https://github.com/onnx/onnx/blob/main/onnx/onnx.proto). That file is
//! `proto2`, which matters on the wire in two places, both mirrored here:
//!
//! * scalar fields are `optional` with explicit presence, so a zero is still written.
//!   ONNX Runtime checks presence (`has_i()`): an `axis = 0` attribute left out, as a
//!   `proto3` encoder would leave it, reads as a missing attribute;
//! * repeated scalars are unpacked unless the file says `[packed = true]`, which
//!   `TensorProto.dims`, `AttributeProto.ints` and `floats` do not. Parsers accept both,
//!   but the bytes then match other writers' (tensor data goes in `raw_data`).
//!
//! Fields are declared in field-number order, which is the order `prost` writes them in.
//! Only what [`super::graph`] writes is declared; a decoder skips the rest.

/// `prost`'s trait, for `encode_to_vec` and `decode` on these messages.
pub use prost::Message;

/// `TensorProto.DataType.FLOAT`.
pub const FLOAT: i32 = 1;
/// `TensorProto.DataType.INT64`.
pub const INT64: i32 = 7;
/// `TensorProto.DataType.BOOL`.
pub const BOOL: i32 = 9;
/// `TensorProto.DataLocation.EXTERNAL`.
pub const EXTERNAL: i32 = 1;

/// `AttributeProto.AttributeType`.
pub mod attribute_type {
    /// `FLOAT`.
    pub const FLOAT: i32 = 1;
    /// `INT`.
    pub const INT: i32 = 2;
    /// `STRING`.
    pub const STRING: i32 = 3;
    /// `TENSOR`.
    pub const TENSOR: i32 = 4;
    /// `FLOATS`.
    pub const FLOATS: i32 = 6;
    /// `INTS`.
    pub const INTS: i32 = 7;
}

/// `ModelProto`: the file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelProto {
    /// The IR version (8 goes with opset 17).
    #[prost(int64, optional, tag = "1")]
    pub ir_version: Option<i64>,
    /// The program that wrote the file.
    #[prost(string, optional, tag = "2")]
    pub producer_name: Option<String>,
    /// Its version.
    #[prost(string, optional, tag = "3")]
    pub producer_version: Option<String>,
    /// Free text.
    #[prost(string, optional, tag = "6")]
    pub doc_string: Option<String>,
    /// The graph.
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    /// The operator sets the graph uses.
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    /// Named strings about the model.
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// `OperatorSetIdProto`: one operator set and its version.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OperatorSetIdProto {
    /// The domain; empty is the default `ai.onnx` set.
    #[prost(string, optional, tag = "1")]
    pub domain: Option<String>,
    /// The version.
    #[prost(int64, optional, tag = "2")]
    pub version: Option<i64>,
}

/// `StringStringEntryProto`: a key and a value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StringStringEntryProto {
    /// The key.
    #[prost(string, optional, tag = "1")]
    pub key: Option<String>,
    /// The value.
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

/// `GraphProto`: nodes in topological order, weights, inputs and outputs.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GraphProto {
    /// The nodes, each after the nodes that produce its inputs.
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    /// The graph's name.
    #[prost(string, optional, tag = "2")]
    pub name: Option<String>,
    /// Constant tensors (weights), by name.
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    /// Free text.
    #[prost(string, optional, tag = "10")]
    pub doc_string: Option<String>,
    /// The inputs a caller feeds.
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    /// The outputs a caller reads.
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
}

/// `NodeProto`: one operator application.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeProto {
    /// Input value names (an empty name skips an optional input).
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    /// Output value names.
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    /// The node's name (unique in the graph).
    #[prost(string, optional, tag = "3")]
    pub name: Option<String>,
    /// The operator, e.g. `MatMul`.
    #[prost(string, optional, tag = "4")]
    pub op_type: Option<String>,
    /// The operator's attributes.
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    /// The operator's domain; absent is `ai.onnx`.
    #[prost(string, optional, tag = "7")]
    pub domain: Option<String>,
}

/// `AttributeProto`: a named constant argument of a node.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeProto {
    /// The name, e.g. `axis`.
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// A float value.
    #[prost(float, optional, tag = "2")]
    pub f: Option<f32>,
    /// An integer value.
    #[prost(int64, optional, tag = "3")]
    pub i: Option<i64>,
    /// A string value.
    #[prost(bytes = "vec", optional, tag = "4")]
    pub s: Option<Vec<u8>>,
    /// A tensor value.
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    /// Float values.
    #[prost(float, repeated, packed = "false", tag = "7")]
    pub floats: Vec<f32>,
    /// Integer values.
    #[prost(int64, repeated, packed = "false", tag = "8")]
    pub ints: Vec<i64>,
    /// Which of the value fields is set ([`attribute_type`]).
    #[prost(int32, optional, tag = "20")]
    pub r#type: Option<i32>,
}

/// `TensorProto`: a constant tensor, its data inline or in an external file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    /// The shape.
    #[prost(int64, repeated, packed = "false", tag = "1")]
    pub dims: Vec<i64>,
    /// The element type ([`FLOAT`], [`INT64`], ...).
    #[prost(int32, optional, tag = "2")]
    pub data_type: Option<i32>,
    /// The name initializers are referred to by.
    #[prost(string, optional, tag = "8")]
    pub name: Option<String>,
    /// The elements as little-endian bytes.
    #[prost(bytes = "vec", optional, tag = "9")]
    pub raw_data: Option<Vec<u8>>,
    /// Where external data lives: `location`, `offset`, `length`.
    #[prost(message, repeated, tag = "13")]
    pub external_data: Vec<StringStringEntryProto>,
    /// [`EXTERNAL`] when the data is in another file.
    #[prost(int32, optional, tag = "14")]
    pub data_location: Option<i32>,
}

/// `ValueInfoProto`: a graph input's or output's name and type.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueInfoProto {
    /// The name.
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// The type.
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
}

/// `TypeProto`, tensors only (its `value` oneof's `tensor_type`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeProto {
    /// A tensor type.
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TensorTypeProto>,
}

/// `TypeProto.Tensor`: element type and shape.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorTypeProto {
    /// The element type ([`FLOAT`], [`INT64`], ...).
    #[prost(int32, optional, tag = "1")]
    pub elem_type: Option<i32>,
    /// The shape.
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

/// `TensorShapeProto`: the dimensions.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    /// One per axis.
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

/// `TensorShapeProto.Dimension`: a size, or a symbol for a size known at run time.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Dimension {
    /// The size or symbol.
    #[prost(oneof = "DimensionValue", tags = "1, 2")]
    pub value: Option<DimensionValue>,
}

/// The `value` oneof of [`Dimension`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum DimensionValue {
    /// A fixed size.
    #[prost(int64, tag = "1")]
    DimValue(i64),
    /// A symbol, e.g. `batch_size`: axes with the same symbol have the same size.
    #[prost(string, tag = "2")]
    DimParam(String),
}

impl Dimension {
    /// A fixed size.
    pub fn fixed(n: i64) -> Self {
        Dimension {
            value: Some(DimensionValue::DimValue(n)),
        }
    }

    /// A symbolic size.
    pub fn symbol(name: &str) -> Self {
        Dimension {
            value: Some(DimensionValue::DimParam(name.to_string())),
        }
    }
}

impl ValueInfoProto {
    /// A tensor of `elem_type` with the given dimensions.
    pub fn tensor(name: &str, elem_type: i32, dims: Vec<Dimension>) -> Self {
        ValueInfoProto {
            name: Some(name.to_string()),
            r#type: Some(TypeProto {
                tensor_type: Some(TensorTypeProto {
                    elem_type: Some(elem_type),
                    shape: Some(TensorShapeProto { dim: dims }),
                }),
            }),
        }
    }
}

impl AttributeProto {
    /// An integer attribute.
    pub fn int(name: &str, value: i64) -> Self {
        AttributeProto {
            name: Some(name.to_string()),
            i: Some(value),
            r#type: Some(attribute_type::INT),
            ..Default::default()
        }
    }

    /// An integer-list attribute.
    pub fn ints(name: &str, values: &[i64]) -> Self {
        AttributeProto {
            name: Some(name.to_string()),
            ints: values.to_vec(),
            r#type: Some(attribute_type::INTS),
            ..Default::default()
        }
    }

    /// A float attribute.
    pub fn float(name: &str, value: f32) -> Self {
        AttributeProto {
            name: Some(name.to_string()),
            f: Some(value),
            r#type: Some(attribute_type::FLOAT),
            ..Default::default()
        }
    }

    /// A tensor attribute (`Constant`'s `value`, `ConstantOfShape`'s fill).
    pub fn tensor(name: &str, value: TensorProto) -> Self {
        AttributeProto {
            name: Some(name.to_string()),
            t: Some(value),
            r#type: Some(attribute_type::TENSOR),
            ..Default::default()
        }
    }
}

impl TensorProto {
    /// A float tensor with its data inline as little-endian bytes.
    pub fn f32(name: &str, dims: &[i64], values: &[f32]) -> Self {
        TensorProto {
            dims: dims.to_vec(),
            data_type: Some(FLOAT),
            name: Some(name.to_string()),
            raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
            ..Default::default()
        }
    }

    /// An int64 tensor with its data inline as little-endian bytes.
    pub fn i64(name: &str, dims: &[i64], values: &[i64]) -> Self {
        TensorProto {
            dims: dims.to_vec(),
            data_type: Some(INT64),
            name: Some(name.to_string()),
            raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
            ..Default::default()
        }
    }

    /// Moves the inline data to `length` bytes at `offset` of the file `location`
    /// (relative to the model file).
    pub fn set_external(&mut self, location: &str, offset: u64, length: u64) {
        let entry = |k: &str, v: String| StringStringEntryProto {
            key: Some(k.to_string()),
            value: Some(v),
        };
        self.raw_data = None;
        self.external_data = vec![
            entry("location", location.to_string()),
            entry("offset", offset.to_string()),
            entry("length", length.to_string()),
        ];
        self.data_location = Some(EXTERNAL);
    }
}

#[cfg(test)]
mod tests {
    use runanywhere_formats::onnx::testing;

    use super::*;

    /// The formats crate's hand-encoded messages are an independent check of the field
    /// numbers and wire types: the same content must give the same bytes.
    #[test]
    fn messages_encode_like_the_hand_written_wire_format() {
        let mut inline = TensorProto::f32("w", &[2, 3], &[0.0; 6]);
        assert_eq!(
            inline.encode_to_vec(),
            testing::tensor("w", &[2, 3], None),
            "inline tensor"
        );
        inline.set_external("model.onnx_data", 4096, 24);
        let external = testing::tensor("w", &[2, 3], Some(("model.onnx_data", 4096, 24)));
        assert_eq!(inline.encode_to_vec(), external, "external tensor");

        let model = ModelProto {
            ir_version: Some(8),
            producer_name: Some("runanywhere-tests".into()),
            graph: Some(GraphProto {
                node: vec![NodeProto {
                    input: vec!["x".into(), "w".into()],
                    output: vec!["y".into()],
                    op_type: Some("MatMul".into()),
                    ..Default::default()
                }],
                name: Some("g".into()),
                initializer: vec![inline.clone()],
                input: vec![ValueInfoProto {
                    name: Some("x".into()),
                    r#type: None,
                }],
                output: vec![ValueInfoProto {
                    name: Some("y".into()),
                    r#type: None,
                }],
                ..Default::default()
            }),
            opset_import: vec![OperatorSetIdProto {
                domain: None,
                version: Some(17),
            }],
            ..Default::default()
        };
        let bytes = model.encode_to_vec();
        assert_eq!(bytes, testing::model(&[external]), "model");
        assert_eq!(ModelProto::decode(bytes.as_slice()).unwrap(), model);
    }

    #[test]
    fn zero_attributes_and_dimensions_are_written() {
        // proto3 would drop `axis = 0`; proto2 presence keeps it (field 3, value 0).
        let a = AttributeProto::int("axis", 0);
        let bytes = a.encode_to_vec();
        assert!(bytes.windows(2).any(|w| w == [3 << 3, 0]), "{bytes:?}");
        assert_eq!(AttributeProto::decode(bytes.as_slice()).unwrap(), a);
        // Unpacked ints: one tag per value.
        let bytes = AttributeProto::ints("perm", &[0, 2, 1, 3]).encode_to_vec();
        assert_eq!(bytes.iter().filter(|&&b| b == 8 << 3).count(), 4);
        let d = Dimension::fixed(0).encode_to_vec();
        assert_eq!(d, [1 << 3, 0]);
        assert_eq!(
            Dimension::symbol("batch_size").encode_to_vec()[0],
            (2 << 3) | 2
        );
    }
}
