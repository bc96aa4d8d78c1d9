//! JSON the way Go's encoding/json writes and reads it.
//!
//! Runtimes compare our output byte for byte with upstream plugins in tests and logs, so
//! printing follows Go: HTML-safe escaping (`<`, `>`, `&`, U+2028, U+2029) and
//! `MarshalIndent(v, "", "    ")` layout. Reading follows Go's case-insensitive field match.

use std::io;
use std::net::IpAddr;

use serde::Serialize;
use serde_json::ser::{CharEscape, CompactFormatter, Formatter, PrettyFormatter};
use serde_json::{Map, Value};

use crate::error::Error;
use crate::ip::{parse_ip, IpNet};

/// A serde_json formatter that adds Go's HTML escaping on top of a base layout.
struct GoEscaping<F>(F);

impl<F: Formatter> Formatter for GoEscaping<F> {
    fn write_string_fragment<W: ?Sized + io::Write>(&mut self, w: &mut W, fragment: &str) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escaped = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            w.write_all(&fragment.as_bytes()[start..i])?;
            w.write_all(escaped.as_bytes())?;
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W: ?Sized + io::Write>(&mut self, w: &mut W, e: CharEscape) -> io::Result<()> {
        self.0.write_char_escape(w, e)
    }

    // Layout is delegated to the base formatter.
    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }
}

fn write_with<T: Serialize + ?Sized, F: Formatter>(v: &T, f: F) -> String {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoEscaping(f));
    v.serialize(&mut ser).expect("our types and Values serialise into memory without failing");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// `json.MarshalIndent(v, "", "    ")`.
pub fn to_go_pretty<T: Serialize + ?Sized>(v: &T) -> String {
    write_with(v, PrettyFormatter::with_indent(b"    "))
}

/// `json.Marshal(v)`.
pub fn to_go_compact<T: Serialize + ?Sized>(v: &T) -> String {
    write_with(v, CompactFormatter)
}

/// Parse bytes as JSON, with serde_json's recursion limit guarding against deep nesting.
pub fn parse(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// Look a field up the way Go's decoder does: any case-insensitive match, the last one wins.
pub fn get_ci<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if let Some(v) = obj.get(key) {
        // Fast path; only differs from Go when a differently-cased duplicate follows.
        if obj.len() < 2 || !obj.keys().any(|k| k != key && k.eq_ignore_ascii_case(key)) {
            return Some(v);
        }
    }
    obj.iter().rev().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
}

/// Go's `json: cannot unmarshal <kind> into Go struct field <field> of type <go_type>`.
pub fn field_type_error(v: &Value, field: &str, go_type: &str) -> String {
    format!("json: cannot unmarshal {} into Go struct field {field} of type {go_type}", go_kind(v))
}

/// Go's `json: cannot unmarshal <kind> into Go value of type <go_type>`.
pub fn value_type_error(v: &Value, go_type: &str) -> String {
    format!("json: cannot unmarshal {} into Go value of type {go_type}", go_kind(v))
}

/// The fields of one JSON object, read as Go's encoding/json fills a struct: names match
/// case-insensitively (the last match wins) and `null` is as if absent. A value of the
/// wrong kind fails with Go's text, naming the field `<prefix><key>` (Go prints
/// `Net.ipam.subnet`, `NetConf.type`, `.name` for an anonymous struct), made an
/// [`Error`] by `fail` (the code and any prefix are the caller's).
pub struct GoFields<'a> {
    obj: &'a Map<String, Value>,
    prefix: String,
    fail: fn(String) -> Error,
}

impl<'a> GoFields<'a> {
    pub fn new(obj: &'a Map<String, Value>, prefix: impl Into<String>, fail: fn(String) -> Error) -> Self {
        GoFields { obj, prefix: prefix.into(), fail }
    }

    /// A top-level value that must be an object: else Go's [`value_type_error`].
    pub fn of(
        v: &'a Value,
        go_type: &str,
        prefix: impl Into<String>,
        fail: fn(String) -> Error,
    ) -> Result<Self, Error> {
        match v {
            Value::Object(obj) => Ok(Self::new(obj, prefix, fail)),
            _ => Err(fail(value_type_error(v, go_type))),
        }
    }

    /// The field's value; `None` when it is absent or null.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        get_ci(self.obj, key).filter(|v| !v.is_null())
    }

    /// Go's error for `v`, found in field `key` (or in an element of it), not being a `go_type`.
    pub fn type_error(&self, key: &str, v: &Value, go_type: &str) -> Error {
        (self.fail)(field_type_error(v, &format!("{}{key}", self.prefix), go_type))
    }

    pub fn string(&self, key: &str) -> Result<Option<&'a str>, Error> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.type_error(key, v, "string")),
        }
    }

    pub fn int(&self, key: &str) -> Result<Option<i64>, Error> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_i64().map(Some).ok_or_else(|| self.type_error(key, v, "int")),
        }
    }

    /// An array field; absent is empty.
    pub fn array(&self, key: &str, go_type: &str) -> Result<&'a [Value], Error> {
        match self.get(key) {
            None => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(v) => Err(self.type_error(key, v, go_type)),
        }
    }

    /// A `[]string` field; absent is empty.
    pub fn strings(&self, key: &str) -> Result<Vec<String>, Error> {
        let items = self.array(key, "[]string")?;
        items.iter().map(|v| v.as_str().map(str::to_string).ok_or_else(|| self.type_error(key, v, "string"))).collect()
    }

    /// A `net.IP` field: absent or "" is none, else Go's `invalid IP address: <text>`.
    pub fn ip(&self, key: &str) -> Result<Option<IpAddr>, Error> {
        match self.string(key)?.filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(s) => parse_ip(s).map(Some).ok_or_else(|| (self.fail)(format!("invalid IP address: {s}"))),
        }
    }

    /// A CIDR field (`types.IPNet`): Go's `invalid CIDR address: <text>`.
    pub fn cidr(&self, key: &str) -> Result<Option<IpNet>, Error> {
        match self.string(key)? {
            None => Ok(None),
            Some(s) => IpNet::parse(s).map(Some).ok_or_else(|| (self.fail)(format!("invalid CIDR address: {s}"))),
        }
    }

    /// A struct-valued field, whose own fields are named `<prefix><key>.<field>`.
    pub fn object(&self, key: &str, go_type: &str) -> Result<Option<GoFields<'a>>, Error> {
        self.get(key).map(|v| self.element(key, v, go_type)).transpose()
    }

    /// `v`, the value of field `key` or one of its elements, as a struct: Go names its
    /// fields, and a non-object, after `key`.
    pub fn element(&self, key: &str, v: &'a Value, go_type: &str) -> Result<GoFields<'a>, Error> {
        match v {
            Value::Object(obj) => Ok(Self::new(obj, format!("{}{key}.", self.prefix), self.fail)),
            _ => Err(self.type_error(key, v, go_type)),
        }
    }
}

/// A JSON value's kind as Go names it in "cannot unmarshal X into …" errors.
pub fn go_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Go's `%q` for a string (strconv.Quote).
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => {
                if (c as u32) <= 0xffff {
                    out.push_str(&format!("\\u{:04x}", c as u32))
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32))
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `%q` for a []string: `["a" "b"]`.
pub fn go_quote_list<S: AsRef<str>>(items: &[S]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s.as_ref())).collect();
    format!("[{}]", quoted.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pretty_layout_and_escaping_match_go() {
        let v = json!({"a": [], "b": {}, "c": [1, "x<y"]});
        assert_eq!(
            to_go_pretty(&v),
            "{\n    \"a\": [],\n    \"b\": {},\n    \"c\": [\n        1,\n        \"x\\u003cy\"\n    ]\n}"
        );
        assert_eq!(to_go_compact(&json!({"k": "a&b\u{2028}>"})), r#"{"k":"a\u0026b\u2028\u003e"}"#);
        assert_eq!(to_go_compact(&json!({"k": "\n\t\u{1}"})), r#"{"k":"\n\t\u0001"}"#);
    }

    #[test]
    fn case_insensitive_lookup_last_wins() {
        let v: Value = serde_json::from_str(r#"{"Subnet":"a","SUBNET":"b"}"#).unwrap();
        assert_eq!(get_ci(v.as_object().unwrap(), "subnet"), Some(&json!("b")));
        let v: Value = serde_json::from_str(r#"{"subnet":"a","SUBNET":"b"}"#).unwrap();
        assert_eq!(get_ci(v.as_object().unwrap(), "subnet"), Some(&json!("b")));
        let v: Value = serde_json::from_str(r#"{"SUBNET":"b","subnet":"a"}"#).unwrap();
        assert_eq!(get_ci(v.as_object().unwrap(), "subnet"), Some(&json!("a")));
        assert_eq!(get_ci(v.as_object().unwrap(), "gateway"), None);
    }

    #[test]
    fn go_fields_are_named_as_go_names_them() {
        let v = json!({"Ipam": {"ranges": [[{"subnet": 1}]]}, "name": null, "mtu": "x"});
        let net = GoFields::new(v.as_object().unwrap(), "Net.", Error::config);
        assert_eq!(net.string("name").unwrap(), None, "null is absent");
        let err = net.int("mtu").unwrap_err();
        assert_eq!(err.msg, "json: cannot unmarshal string into Go struct field Net.mtu of type int");
        let ipam = net.object("ipam", "IPAMConfig").unwrap().expect("matched case-insensitively");
        let sets = ipam.array("ranges", "[]RangeSet").unwrap();
        let range = ipam.element("ranges", &sets[0][0], "Range").unwrap();
        assert_eq!(
            range.cidr("subnet").unwrap_err().msg,
            "json: cannot unmarshal number into Go struct field Net.ipam.ranges.subnet of type string"
        );
        let err = ipam.element("ranges", &sets[0], "Range").err().unwrap();
        assert_eq!(err.msg, "json: cannot unmarshal array into Go struct field Net.ipam.ranges of type Range");
    }

    #[test]
    fn quoting_matches_go() {
        assert_eq!(go_quote("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\x01""#);
        assert_eq!(go_quote_list(&["K=V", "X=1"]), r#"["K=V" "X=1"]"#);
        assert_eq!(go_quote_list::<&str>(&[]), "[]");
    }
}
