//! Delimited interaction files: MovieLens `u.data` (tab separated, no header), `ratings.csv`
//! (comma separated, header) and any other delimited file through a [`CsvFormat`] that says
//! which column holds what.
//!
//! Files are streamed line by line through one reused buffer (MovieLens 20M's 533 MB
//! `ratings.csv` is never held whole; memory grows only with the records), each line UTF-8 when
//! it is valid UTF-8 and Latin-1 otherwise (the older MovieLens files are Latin-1). Fields may be double-quoted (`"a,b"`, `""` for a quote).
//! Every row must have as many fields as the first one; a row that does not, or whose rating or
//! timestamp is not a number, is an error naming the file and line, or with
//! [`CsvFormat::lenient`] is skipped and counted in [`Interactions::skipped`].

use std::borrow::Cow;
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;

use kiln_core::data::text::decode;

use crate::data::{IdMap, Interaction, Interactions};
use crate::error::{RecsysError, Result};

/// Where a field is: by 0-based position, or by name in the header row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    /// 0-based position.
    Index(usize),
    /// Name in the header row (needs [`CsvFormat::header`]).
    Name(String),
}

impl From<usize> for Column {
    fn from(i: usize) -> Self {
        Column::Index(i)
    }
}

impl From<&str> for Column {
    fn from(name: &str) -> Self {
        Column::Name(name.to_owned())
    }
}

/// How to read a delimited interaction file.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvFormat {
    /// Field separator (`"\t"`, `","`, `"::"`, ...).
    pub delimiter: String,
    /// Whether the first line is a header.
    pub header: bool,
    /// The user id column.
    pub user: Column,
    /// The item id column.
    pub item: Column,
    /// The rating column; `None` reads implicit feedback (every row rating 1).
    pub rating: Option<Column>,
    /// The timestamp column (integer seconds), if any.
    pub timestamp: Option<Column>,
    /// Skip and count bad rows instead of failing on the first one.
    pub lenient: bool,
}

impl CsvFormat {
    /// MovieLens 100K `u.data`: `user<TAB>item<TAB>rating<TAB>timestamp`, no header.
    pub fn movielens_100k() -> Self {
        Self {
            delimiter: "\t".into(),
            header: false,
            user: 0.into(),
            item: 1.into(),
            rating: Some(2.into()),
            timestamp: Some(3.into()),
            lenient: false,
        }
    }

    /// MovieLens `ratings.csv` (ml-latest, ml-25m, ...): header `userId,movieId,rating,timestamp`.
    pub fn movielens_csv() -> Self {
        Self {
            delimiter: ",".into(),
            header: true,
            user: "userId".into(),
            item: "movieId".into(),
            rating: Some("rating".into()),
            timestamp: Some("timestamp".into()),
            lenient: false,
        }
    }

    /// MovieLens 1M / 10M `ratings.dat`: `user::item::rating::timestamp`.
    pub fn movielens_dat() -> Self {
        Self {
            delimiter: "::".into(),
            ..Self::movielens_100k()
        }
    }

    /// A custom format: `delimiter`, header or not, user and item columns; no rating (implicit)
    /// and no timestamp until set with [`with_rating`](Self::with_rating) and
    /// [`with_timestamp`](Self::with_timestamp).
    pub fn new(
        delimiter: impl Into<String>,
        header: bool,
        user: impl Into<Column>,
        item: impl Into<Column>,
    ) -> Self {
        Self {
            delimiter: delimiter.into(),
            header,
            user: user.into(),
            item: item.into(),
            rating: None,
            timestamp: None,
            lenient: false,
        }
    }

    /// Sets the rating column.
    pub fn with_rating(mut self, column: impl Into<Column>) -> Self {
        self.rating = Some(column.into());
        self
    }

    /// Sets the timestamp column.
    pub fn with_timestamp(mut self, column: impl Into<Column>) -> Self {
        self.timestamp = Some(column.into());
        self
    }

    /// Skips and counts bad rows instead of failing.
    pub fn with_lenient(mut self, lenient: bool) -> Self {
        self.lenient = lenient;
        self
    }

    /// Reads `path` with fresh id maps.
    ///
    /// # Errors
    /// [`RecsysError::Io`] when the file cannot be read; [`RecsysError::Parse`] naming the file and
    /// line for a row that does not parse (unless the format is lenient).
    pub fn read(&self, path: impl AsRef<Path>) -> Result<Interactions> {
        self.read_with_maps(path, IdMap::new(), IdMap::new())
    }

    /// Reads `path`, extending the given id maps (so that ids already known, e.g. from a
    /// feature file, keep their dense ids).
    ///
    /// # Errors
    /// As [`read`](Self::read).
    pub fn read_with_maps(
        &self,
        path: impl AsRef<Path>,
        mut users: IdMap,
        mut items: IdMap,
    ) -> Result<Interactions> {
        let path = path.as_ref();
        if self.delimiter.is_empty() {
            return Err(RecsysError::param("csv", "delimiter", "\"\"", "not empty"));
        }
        let file = std::fs::File::open(path).map_err(|e| RecsysError::io(path, e))?;
        let mut lines = Lines::new(std::io::BufReader::with_capacity(1 << 20, file));
        let header = self.read_header(&mut lines, path)?;
        let columns = self.columns(header.as_deref(), path)?;
        let mut width = header.as_ref().map(Vec::len);
        let mut records = Vec::new();
        let mut skipped = 0;
        while let Some((number, line)) = lines.next_line().map_err(|e| RecsysError::io(path, e))? {
            let fields = split_fields(line, &self.delimiter);
            let expected = *width.get_or_insert(fields.len());
            match columns.row(&fields, expected, (&mut users, &mut items)) {
                Ok(r) => records.push(r),
                Err(_) if self.lenient => skipped += 1,
                Err(reason) => return Err(RecsysError::parse(path, number, reason)),
            }
        }
        if records.is_empty() {
            return Err(RecsysError::parse(
                path,
                0,
                if skipped > 0 {
                    format!("no valid rows ({skipped} skipped)")
                } else {
                    "empty file: no rows".to_owned()
                },
            ));
        }
        let mut out = Interactions::new(records, Arc::new(users), Arc::new(items));
        out.skipped = skipped;
        Ok(out)
    }

    /// The header's trimmed fields when the format has one (an error for an empty file).
    fn read_header<R: BufRead>(
        &self,
        lines: &mut Lines<R>,
        path: &Path,
    ) -> Result<Option<Vec<String>>> {
        if !self.header {
            return Ok(None);
        }
        match lines.next_line().map_err(|e| RecsysError::io(path, e))? {
            Some((_, line)) => Ok(Some(
                split_fields(line, &self.delimiter)
                    .into_iter()
                    .map(|f| f.trim().to_owned())
                    .collect(),
            )),
            None => Err(RecsysError::parse(path, 0, "empty file: no header")),
        }
    }

    /// Where each column is, names looked up in `header` (an error naming a column the
    /// header lacks, or a name where the format has no header).
    fn columns(&self, header: Option<&[String]>, path: &Path) -> Result<Columns> {
        let resolve = |c: &Column| -> Result<usize> {
            match c {
                Column::Index(i) => Ok(*i),
                Column::Name(name) => header
                    .and_then(|h| h.iter().position(|f| f == name))
                    .ok_or_else(|| {
                        let reason = match header {
                            Some(h) => format!("no column '{name}' in header {h:?}"),
                            None => format!("column '{name}' named but the format has no header"),
                        };
                        RecsysError::parse(path, 1, reason)
                    }),
            }
        };
        let (user, item) = (resolve(&self.user)?, resolve(&self.item)?);
        let rating = self.rating.as_ref().map(&resolve).transpose()?;
        let timestamp = self.timestamp.as_ref().map(&resolve).transpose()?;
        let needed = [Some(user), Some(item), rating, timestamp]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(0)
            + 1;
        Ok(Columns {
            user,
            item,
            rating,
            timestamp,
            needed,
        })
    }
}

/// The resolved column of each field of an interaction.
struct Columns {
    user: usize,
    item: usize,
    rating: Option<usize>,
    timestamp: Option<usize>,
    /// Fields a row needs: one past the last column read.
    needed: usize,
}

impl Columns {
    /// One row's interaction (its ids added to the maps), or why the row is bad; `expected`
    /// is the file's number of fields.
    fn row(
        &self,
        fields: &[Cow<'_, str>],
        expected: usize,
        (users, items): (&mut IdMap, &mut IdMap),
    ) -> std::result::Result<Interaction, String> {
        let needed = self.needed;
        if fields.len() != expected || fields.len() < needed {
            return Err(format!(
                "expected {} fields, found {}",
                expected.max(needed),
                fields.len()
            ));
        }
        let id = |col: usize, what: &str| -> std::result::Result<&str, String> {
            let v = fields[col].trim();
            if v.is_empty() {
                Err(format!("empty {what} id in column {}", col + 1))
            } else {
                Ok(v)
            }
        };
        let user = id(self.user, "user")?;
        let item = id(self.item, "item")?;
        let rating = match self.rating {
            Some(c) => {
                let v = fields[c].trim();
                match v.parse::<f32>() {
                    Ok(r) if r.is_finite() => r,
                    _ => return Err(format!("rating '{v}' is not a finite number")),
                }
            }
            None => 1.0,
        };
        let timestamp = match self.timestamp {
            Some(c) => {
                let v = fields[c].trim();
                v.parse::<i64>()
                    .map_err(|_| format!("timestamp '{v}' is not an integer"))?
            }
            None => 0,
        };
        Ok(Interaction {
            user: users.insert(user),
            item: items.insert(item),
            rating,
            timestamp,
        })
    }
}

/// The non-blank lines of a reader with their 1-based numbers, one at a time into one reused
/// buffer (a 20M-line file is never held whole), `\r\n` or `\n` terminated, each UTF-8 when
/// valid and Latin-1 otherwise (as [`kiln_core::data::text::lines`]).
struct Lines<R> {
    reader: R,
    bytes: Vec<u8>,
    text: String,
    number: usize,
}

impl<R: BufRead> Lines<R> {
    fn new(reader: R) -> Self {
        Self {
            reader,
            bytes: Vec::new(),
            text: String::new(),
            number: 0,
        }
    }

    /// The next non-blank line, or `None` at the end.
    fn next_line(&mut self) -> std::io::Result<Option<(usize, &str)>> {
        loop {
            self.bytes.clear();
            if self.reader.read_until(b'\n', &mut self.bytes)? == 0 {
                return Ok(None);
            }
            self.number += 1;
            let mut line = self.bytes.as_slice();
            line = line.strip_suffix(b"\n").unwrap_or(line);
            line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.text.clear();
            self.text.push_str(&decode(line));
            return Ok(Some((self.number, &self.text)));
        }
    }
}

/// Splits on `delimiter`, honouring double quotes; fields without quotes borrow the line.
pub(crate) fn split_fields<'a>(line: &'a str, delimiter: &str) -> Vec<Cow<'a, str>> {
    if !line.contains('"') {
        return line.split(delimiter).map(Cow::Borrowed).collect();
    }
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut rest = line;
    while let Some(c) = rest.chars().next() {
        if quoted {
            if rest.starts_with("\"\"") {
                field.push('"');
                rest = &rest[2..];
                continue;
            }
            if c == '"' {
                quoted = false;
            } else {
                field.push(c);
            }
        } else if rest.starts_with(delimiter) {
            fields.push(Cow::Owned(std::mem::take(&mut field)));
            rest = &rest[delimiter.len()..];
            continue;
        } else if c == '"' && field.is_empty() {
            quoted = true;
        } else {
            field.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    fields.push(Cow::Owned(field));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, text).unwrap();
        f
    }

    fn err(format: &CsvFormat, text: &[u8]) -> String {
        let f = file(text);
        format.read(f.path()).unwrap_err().to_string()
    }

    #[test]
    fn reads_u_data_with_dense_ids_both_ways() {
        let f = file(b"196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t377\t1\t878887116\n");
        let data = CsvFormat::movielens_100k().read(f.path()).unwrap();
        assert_eq!(data.len(), 3);
        assert_eq!((data.num_users(), data.num_items()), (2, 3));
        assert_eq!(data.records[2].user, 0);
        assert_eq!(data.records[2].rating, 1.0);
        assert_eq!(data.records[1].timestamp, 891717742);
        assert_eq!(data.users.raw(1), Some("186"));
        assert_eq!(data.items.dense("377"), Some(2));
    }

    #[test]
    fn reads_ratings_csv_by_header_names_in_any_order() {
        let f = file(b"timestamp,rating,movieId,userId\r\n10,4.5,7,1\r\n11,2.0,\"8\",2\r\n");
        let data = CsvFormat::movielens_csv().read(f.path()).unwrap();
        assert_eq!(data.records[0].rating, 4.5);
        assert_eq!(data.items.raw(1), Some("8"));
        assert_eq!(data.records[1].timestamp, 11);
    }

    #[test]
    fn custom_mapping_quotes_and_implicit_feedback() {
        let f = file(b"item;who;extra\n\"a;b\";u1;x\nc;u2;y\n");
        let data = CsvFormat::new(";", true, "who", "item")
            .read(f.path())
            .unwrap();
        assert_eq!(data.items.raw(0), Some("a;b"));
        assert!(data.records.iter().all(|r| r.rating == 1.0));
    }

    #[test]
    fn latin1_ids_are_decoded() {
        let f = file(b"Jos\xe9,Les Mis\xe9rables\n");
        let data = CsvFormat::new(",", false, 0, 1).read(f.path()).unwrap();
        assert_eq!(data.users.raw(0), Some("José"));
        assert_eq!(data.items.raw(0), Some("Les Misérables"));
    }

    #[test]
    fn bad_rows_name_file_and_line() {
        let fmt = CsvFormat::movielens_100k();
        let e = err(&fmt, b"1\t2\t3\t4\n1\t2\tfive\t4\n");
        assert!(
            e.contains(":2: rating 'five' is not a finite number"),
            "{e}"
        );
        let e = err(&fmt, b"1\t2\t3\t4\n\n1\t2\t3\n");
        assert!(e.contains(":3: expected 4 fields, found 3"), "{e}");
        let e = err(&fmt, b"1\t2\tNaN\t4\n");
        assert!(e.contains(":1: rating 'NaN'"), "{e}");
        let e = err(&fmt, b"1\t2\t3\tyesterday\n");
        assert!(
            e.contains(":1: timestamp 'yesterday' is not an integer"),
            "{e}"
        );
        let e = err(&fmt, b"\t2\t3\t4\n");
        assert!(e.contains(":1: empty user id"), "{e}");
        let e = err(&fmt, b"");
        assert!(e.contains(":0: empty file"), "{e}");
        let e = err(
            &CsvFormat::movielens_csv(),
            b"user,movieId,rating,timestamp\n1,2,3,4\n",
        );
        assert!(e.contains(":1: no column 'userId'"), "{e}");
        let e = err(&CsvFormat::movielens_csv(), b"");
        assert!(e.contains(":0: empty file: no header"), "{e}");
    }

    #[test]
    fn lenient_skips_and_counts() {
        let f = file(b"1\t2\t3\t4\n1\t2\tx\t4\n1\t2\n2\t3\t5\t6\n");
        let data = CsvFormat::movielens_100k()
            .with_lenient(true)
            .read(f.path())
            .unwrap();
        assert_eq!((data.len(), data.skipped), (2, 2));
        let f = file(b"1\t2\tx\t4\n");
        let e = CsvFormat::movielens_100k()
            .with_lenient(true)
            .read(f.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no valid rows (1 skipped)"), "{e}");
    }

    proptest::proptest! {
        /// The streaming reader, through a 3-byte buffer, yields what the whole-file splitter
        /// of kiln-core does: same numbers, same decoded text, for any bytes.
        #[test]
        fn streamed_lines_equal_whole_file_lines(
            bytes in proptest::collection::vec(
                proptest::sample::select(vec![b'a', b',', b'\n', b'\r', b' ', 0xe9, 0xc3, 0xa9]),
                0..200,
            )
        ) {
            let want: Vec<(usize, String)> = kiln_core::data::text::lines(&bytes)
                .map(|(n, l)| (n, l.into_owned()))
                .collect();
            let mut lines = Lines::new(std::io::BufReader::with_capacity(3, bytes.as_slice()));
            let mut got = Vec::new();
            while let Some((n, l)) = lines.next_line().unwrap() {
                got.push((n, l.to_owned()));
            }
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn missing_file_is_an_io_error_naming_it() {
        let e = CsvFormat::movielens_100k()
            .read("/nonexistent/u.data")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/nonexistent/u.data:"), "{e}");
    }
}
