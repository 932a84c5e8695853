//! What the config's errors are made of: the error types, key paths and their place in the file,
//! the names serde knows (for "did you mean" suggestions and "one of" lists), and the keys every
//! table accepts.

use std::{
    fmt::{self, Write as _},
    ops::Range,
    path::PathBuf,
};

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue};

use super::{check::SCHEMA, secret::SECRET_REF_KEYS};

/// One problem in a config, located as precisely as we can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problem is in (the config file, or an allowlist file it names).
    pub file: PathBuf,
    /// 1-based line in `file`.
    pub line: Option<usize>,
    /// The key path in the config, e.g. `allow.cidrs[2]` or `route[0].verify` (indices 0-based).
    pub key: Option<String>,
    /// Why it is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    /// ``FILE:LINE: `key`: message``, leaving out the parts that are unknown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a config; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    /// One error per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_char('\n')?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Where each line of a text starts, so that finding the line of an offset is a binary search:
/// a config can hold a hundred thousand allowlist entries, each of which records its line.
#[derive(Debug, Clone)]
pub(crate) struct LineIndex {
    /// The offset of every `\n`, in order.
    newlines: Vec<usize>,
    len: usize,
}

impl LineIndex {
    pub(crate) fn new(text: &str) -> Self {
        let newlines = text
            .bytes()
            .enumerate()
            .filter(|&(_, b)| b == b'\n')
            .map(|(offset, _)| offset)
            .collect();
        Self {
            newlines,
            len: text.len(),
        }
    }

    /// The 1-based line of `byte_offset`, as [`line_of`] counts it.
    pub(crate) fn line_of(&self, byte_offset: usize) -> usize {
        let end = byte_offset.min(self.len);
        self.newlines.partition_point(|&newline| newline < end) + 1
    }
}

/// The 1-based line of `byte_offset` in `text` (offsets past the end count as the last line).
pub fn line_of(text: &str, byte_offset: usize) -> usize {
    let end = byte_offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// A path to a value in the document, shown as `route[0].secrets[1]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyPath(pub(crate) Vec<Seg>);

impl KeyPath {
    /// A path of dotted keys, e.g. `"filter.mode"`.
    pub(crate) fn of(dotted: &str) -> Self {
        KeyPath(dotted.split('.').map(|k| Seg::Key(k.to_owned())).collect())
    }

    pub(crate) fn key(&self, key: &str) -> Self {
        let mut path = self.clone();
        path.0.push(Seg::Key(key.to_owned()));
        path
    }

    pub(crate) fn index(&self, index: usize) -> Self {
        let mut path = self.clone();
        path.0.push(Seg::Index(index));
        path
    }

    /// The path of the table holding the last key.
    pub(crate) fn parent(&self) -> &[Seg] {
        &self.0[..self.0.len().saturating_sub(1)]
    }

    pub(crate) fn last_key(&self) -> Option<&str> {
        match self.0.last() {
            Some(Seg::Key(key)) => Some(key),
            _ => None,
        }
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(key) if i == 0 => f.write_str(key)?,
                Seg::Key(key) => write!(f, ".{key}")?,
                Seg::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

pub(crate) fn segments(path: &serde_ignored::Path<'_>) -> Vec<Seg> {
    use serde_ignored::Path;
    match path {
        Path::Root => Vec::new(),
        Path::Seq { parent, index } => {
            let mut segs = segments(parent);
            segs.push(Seg::Index(*index));
            segs
        }
        Path::Map { parent, key } => {
            let mut segs = segments(parent);
            segs.push(Seg::Key(key.clone()));
            segs
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => segments(parent),
    }
}

/// Spans of the deepest item along `path` that exists in the document: (key span, value span).
/// A missing key thus points at its table (e.g. the `[[route]]` header it is missing from).
pub(crate) fn locate(
    root: &DeTable<'_>,
    path: &[Seg],
) -> (Option<Range<usize>>, Option<Range<usize>>) {
    let mut spans = (None, None);
    let mut current: Option<&DeValue<'_>> = None;
    for seg in path {
        let table = match current {
            None => Some(root),
            Some(value) => value.as_table(),
        };
        let step = match seg {
            Seg::Key(key) => table
                .and_then(|t| t.get_key_value(key.as_str()))
                .map(|(k, v)| (Some(k.span()), v)),
            Seg::Index(index) => current
                .and_then(DeValue::as_array)
                .and_then(|array| array.get(*index))
                .map(|v| (None, v)),
        };
        let Some((key_span, value)) = step else { break };
        spans = (key_span, Some(value.span()));
        current = Some(value.get_ref());
    }
    spans
}

/// The key path of the innermost item whose key or value covers `offset`.
pub(crate) fn key_at(root: &DeTable<'_>, offset: usize) -> Option<KeyPath> {
    let mut best = None;
    key_at_table(root, &KeyPath(Vec::new()), offset, &mut best);
    best.map(|(_, path)| path)
}

/// The best match so far: its span's length and its path.
type KeyMatch = Option<(usize, KeyPath)>;

fn key_at_table(table: &DeTable<'_>, path: &KeyPath, offset: usize, best: &mut KeyMatch) {
    for (key, item) in table.iter() {
        let child = path.key(key.get_ref());
        key_at_span(key.span(), &child, offset, best);
        key_at_item(item, child, offset, best);
    }
}

fn key_at_item(
    item: &toml::Spanned<DeValue<'_>>,
    path: KeyPath,
    offset: usize,
    best: &mut KeyMatch,
) {
    key_at_span(item.span(), &path, offset, best);
    match item.get_ref() {
        DeValue::Table(table) => key_at_table(table, &path, offset, best),
        DeValue::Array(array) => {
            for (index, element) in array.iter().enumerate() {
                key_at_item(element, path.index(index), offset, best);
            }
        }
        _ => {}
    }
}

/// Keeps `path` if its `span` covers `offset` at least as tightly as the best so far (ties go to
/// the later, deeper item).
fn key_at_span(span: Range<usize>, path: &KeyPath, offset: usize, best: &mut KeyMatch) {
    let covers = span.contains(&offset) || (span.is_empty() && span.start == offset);
    if covers && best.as_ref().is_none_or(|(len, _)| span.len() <= *len) {
        *best = Some((span.len(), path.clone()));
    }
}

// ---------------------------------------------------------------------------------------------
// Names serde knows, for suggestions
// ---------------------------------------------------------------------------------------------

/// The names `T`'s derived `Deserialize` accepts: a struct's fields or an enum's variants. Read
/// from serde itself so that suggestions and "expected one of" lists can never drift from the
/// schema.
pub(crate) fn serde_names<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut names: &'static [&'static str] = &[];
    // The probe always fails after recording the names; that failure is the expected outcome.
    let _ = T::deserialize(NameProbe(&mut names));
    names
}

struct NameProbe<'a>(&'a mut &'static [&'static str]);

impl<'de> serde::Deserializer<'de> for NameProbe<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("name probe"))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(serde::de::Error::custom("name probe"))
    }

    fn deserialize_enum<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = variants;
        Err(serde::de::Error::custom("name probe"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map identifier ignored_any
    }
}

/// Parses one of `T`'s variant names (as serde spells them), with a message listing them all.
pub(crate) fn parse_choice<T: DeserializeOwned>(value: &str) -> Result<T, String> {
    use serde::de::IntoDeserializer as _;
    let de: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
        value.into_deserializer();
    T::deserialize(de).map_err(|_| {
        let names = serde_names::<T>();
        let list = names
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let hint = closest(value, names.iter().copied())
            .map(|n| format!(" (did you mean \"{n}\"?)"))
            .unwrap_or_default();
        format!("\"{value}\" is not one of {list}{hint}")
    })
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a likely typo.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word = word.to_lowercase();
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&word, &c.to_lowercase()), c))
        .filter(|&(distance, _)| distance <= limit)
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, c)| c)
}

/// Edit distance by characters, counting a swap of two neighbours as one edit (the commonest
/// typo): optimal string alignment distance.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: distance between the first i chars of a and the first j chars of b.
    let mut d = vec![vec![0; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// One table of the schema: where it is and the keys its `Raw` struct reads.
pub(crate) struct Table {
    /// Its key path with array indices left out: `""` for the root, `"delivery.nats"`,
    /// `"route.validation"`.
    pub(crate) path: &'static str,
    /// Whether it is written as an array of tables (`[[route]]`).
    pub(crate) array: bool,
    /// The keys it accepts: its `Raw` struct's field names, as serde reads them.
    pub(crate) keys: fn() -> &'static [&'static str],
    /// Its keys whose value is a secret reference (`{ env = "NAME" }` or `{ file = "PATH" }`).
    pub(crate) secret_refs: &'static [&'static str],
    /// Its keys whose value is a list of secret references.
    pub(crate) secret_ref_lists: &'static [&'static str],
}

/// The schema's table at `path` (dotted, indices left out).
fn table(path: &str) -> Option<&'static Table> {
    SCHEMA
        .iter()
        .flat_map(|tables| tables.iter())
        .find(|table| table.path == path)
}

/// The keys a table accepts, by its path (indices ignored); the sections for the root.
pub(crate) fn known_keys(table_path: &[Seg]) -> &'static [&'static str] {
    let keys: Vec<&str> = table_path
        .iter()
        .filter_map(|seg| match seg {
            Seg::Key(key) => Some(key.as_str()),
            Seg::Index(_) => None,
        })
        .collect();
    table(&keys.join(".")).map_or(&[], |table| (table.keys)())
}

/// Every key path the config file accepts, at every depth, in schema order: sections
/// (`filter`, `route`), tables within them (`server.limits`, `route[].validation`), values
/// (`filter.mode`) and the keys of secret references (`route[].token.env`,
/// `route[].secrets[].file`). Arrays of tables and lists are written with `[]`. Read from the
/// same schema as the unknown-key check, so it lists exactly what that check lets through.
pub fn accepted_keys() -> Vec<String> {
    let mut out = Vec::new();
    add_accepted_keys(&mut out, "", "");
    out
}

/// Adds the keys of the table at schema `path`, shown under the prefix `shown`.
fn add_accepted_keys(out: &mut Vec<String>, path: &str, shown: &str) {
    let Some(table) = table(path) else { return };
    let join = |prefix: &str, key: &str| {
        if prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{prefix}.{key}")
        }
    };
    for &key in (table.keys)() {
        let child_path = join(path, key);
        let child_shown = join(shown, key);
        out.push(child_shown.clone());
        if table.secret_refs.contains(&key) {
            for inner in SECRET_REF_KEYS {
                out.push(format!("{child_shown}.{inner}"));
            }
        }
        if table.secret_ref_lists.contains(&key) {
            for inner in SECRET_REF_KEYS {
                out.push(format!("{child_shown}[].{inner}"));
            }
        }
        if let Some(child) = self::table(&child_path) {
            let shown = if child.array {
                format!("{child_shown}[]")
            } else {
                child_shown
            };
            add_accepted_keys(out, &child_path, &shown);
        }
    }
}

/// For a key written outside its section (e.g. `mode` at the top), the sections that have it.
pub(crate) fn sections_with(key: &str) -> Vec<String> {
    known_keys(&[])
        .iter()
        .filter(|section| known_keys(&KeyPath::of(section).0).contains(&key))
        .map(|section| format!("{section}.{key}"))
        .collect()
}
