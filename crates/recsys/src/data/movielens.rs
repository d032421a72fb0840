//! The MovieLens 100K folder (`u.data`, `u.item`, `u.user`; Harper and Konstan, 2015): ratings
//! with dense ids in the files' own id order, and the item and user side information as
//! [`FeatureMatrix`]es for content and hybrid models.
//!
//! `u.item` is Latin-1; lines are decoded as UTF-8 when valid and Latin-1 otherwise.

use std::path::Path;
use std::sync::Arc;

use kiln_core::data::text::lines;

use crate::data::{CsvFormat, FeatureMatrix, IdMap, Interactions};
use crate::error::{RecsysError, Result};

/// The 19 genres of `u.item`, in column order (as listed in `u.genre`).
pub const GENRES: [&str; 19] = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
];

/// A movie from `u.item`.
#[derive(Debug, Clone, PartialEq)]
pub struct Movie {
    /// Title with year, e.g. `Toy Story (1995)`.
    pub title: String,
    /// Release year, when the file gives a date.
    pub year: Option<u16>,
    /// Genre flags, indexed like [`GENRES`].
    pub genres: [bool; 19],
}

/// A user from `u.user`.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// Age in years.
    pub age: u8,
    /// `M` or `F`.
    pub gender: String,
    /// Occupation, one of `u.occupation`.
    pub occupation: String,
}

/// MovieLens 100K: ratings plus movie and user side information, all on the same dense ids.
#[derive(Debug, Clone)]
pub struct MovieLens {
    /// The 100,000 ratings of `u.data`.
    pub ratings: Interactions,
    /// Movies by dense item id.
    pub movies: Vec<Movie>,
    /// Users by dense user id.
    pub users: Vec<User>,
}

impl MovieLens {
    /// Reads `u.user`, `u.item` and `u.data` from `dir` (the unpacked `ml-100k` folder).
    ///
    /// # Errors
    /// [`RecsysError::Io`] for a missing or unreadable file; [`RecsysError::Parse`] naming the file
    /// and line for a bad row; [`RecsysError::Data`] when the ratings name users or items the other
    /// files lack.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let mut user_ids = IdMap::new();
        let users = read_users(&dir.join("u.user"), &mut user_ids)?;
        let mut item_ids = IdMap::new();
        let movies = read_movies(&dir.join("u.item"), &mut item_ids)?;
        let ratings =
            CsvFormat::movielens_100k().read_with_maps(dir.join("u.data"), user_ids, item_ids)?;
        if ratings.num_users() != users.len() || ratings.num_items() != movies.len() {
            return Err(RecsysError::Data(format!(
                "{}: ratings name {} users and {} items, u.user and u.item list {} and {}",
                dir.join("u.data").display(),
                ratings.num_users(),
                ratings.num_items(),
                users.len(),
                movies.len()
            )));
        }
        Ok(Self {
            ratings,
            movies,
            users,
        })
    }

    /// Item features: the 19 genre flags and the release decade (one-hot).
    pub fn item_features(&self) -> FeatureMatrix {
        let mut names: Vec<String> = GENRES.iter().map(|g| format!("genre:{g}")).collect();
        let decades: Vec<u16> = {
            let mut d: Vec<u16> = self
                .movies
                .iter()
                .filter_map(|m| m.year)
                .map(|y| y / 10)
                .collect();
            d.sort_unstable();
            d.dedup();
            d
        };
        names.extend(decades.iter().map(|d| format!("decade:{}0s", d)));
        let rows = self
            .movies
            .iter()
            .map(|m| {
                let mut row: Vec<(u32, f32)> = (0..19)
                    .filter(|&g| m.genres[g])
                    .map(|g| (g as u32, 1.0))
                    .collect();
                if let Some(y) = m.year {
                    let d = decades.binary_search(&(y / 10)).expect("decade listed");
                    row.push(((19 + d) as u32, 1.0));
                }
                row
            })
            .collect();
        FeatureMatrix::from_valid_parts(names, rows)
    }

    /// User features: age band (under 18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+, the
    /// MovieLens 1M bands), gender and occupation (one-hot).
    pub fn user_features(&self) -> FeatureMatrix {
        const BANDS: [(u8, &str); 7] = [
            (18, "<18"),
            (25, "18-24"),
            (35, "25-34"),
            (45, "35-44"),
            (50, "45-49"),
            (56, "50-55"),
            (u8::MAX, "56+"),
        ];
        let mut names: Vec<String> = BANDS.iter().map(|b| format!("age:{}", b.1)).collect();
        names.push("gender:M".into());
        names.push("gender:F".into());
        let mut occupations: Vec<&str> = self.users.iter().map(|u| u.occupation.as_str()).collect();
        occupations.sort_unstable();
        occupations.dedup();
        names.extend(occupations.iter().map(|o| format!("occupation:{o}")));
        let rows = self
            .users
            .iter()
            .map(|u| {
                let band = BANDS.iter().position(|b| u.age < b.0).unwrap_or(6);
                let gender = if u.gender == "F" { 8 } else { 7 };
                let occ = occupations
                    .binary_search(&u.occupation.as_str())
                    .expect("listed");
                vec![(band as u32, 1.0), (gender, 1.0), ((9 + occ) as u32, 1.0)]
            })
            .collect();
        FeatureMatrix::from_valid_parts(names, rows)
    }

    /// The ids map of the ratings, shared by the features.
    pub fn item_ids(&self) -> &Arc<IdMap> {
        &self.ratings.items
    }
}

fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| RecsysError::io(path, e))
}

fn read_users(path: &Path, ids: &mut IdMap) -> Result<Vec<User>> {
    let bytes = read_bytes(path)?;
    let mut users = Vec::new();
    for (n, line) in lines(&bytes) {
        let f: Vec<&str> = line.split('|').collect();
        if f.len() != 5 {
            return Err(RecsysError::parse(
                path,
                n,
                format!(
                    "expected 5 '|'-separated fields (id|age|gender|occupation|zip), found {}",
                    f.len()
                ),
            ));
        }
        let age = f[1]
            .trim()
            .parse::<u8>()
            .map_err(|_| RecsysError::parse(path, n, format!("age '{}' is not a number", f[1])))?;
        if ids.dense(f[0]).is_some() {
            return Err(RecsysError::parse(
                path,
                n,
                format!("user {} listed twice", f[0]),
            ));
        }
        ids.insert(f[0].trim());
        users.push(User {
            age,
            gender: f[2].trim().to_owned(),
            occupation: f[3].trim().to_owned(),
        });
    }
    if users.is_empty() {
        return Err(RecsysError::parse(path, 0, "empty file: no users"));
    }
    Ok(users)
}

fn read_movies(path: &Path, ids: &mut IdMap) -> Result<Vec<Movie>> {
    let bytes = read_bytes(path)?;
    let mut movies = Vec::new();
    for (n, line) in lines(&bytes) {
        let f: Vec<&str> = line.split('|').collect();
        if f.len() != 24 {
            return Err(RecsysError::parse(
                path,
                n,
                format!(
                    "expected 24 '|'-separated fields (id|title|date|video date|url|19 genres), found {}",
                    f.len()
                ),
            ));
        }
        let mut genres = [false; 19];
        for (g, flag) in f[5..].iter().enumerate() {
            genres[g] = match flag.trim() {
                "1" => true,
                "0" => false,
                other => {
                    return Err(RecsysError::parse(
                        path,
                        n,
                        format!("genre flag {} ('{}') is not 0 or 1", GENRES[g], other),
                    ));
                }
            };
        }
        // Dates look like 01-Jan-1995; the year is the part after the last '-'.
        let year = f[2]
            .rsplit('-')
            .next()
            .and_then(|y| y.trim().parse::<u16>().ok());
        if ids.dense(f[0]).is_some() {
            return Err(RecsysError::parse(
                path,
                n,
                format!("item {} listed twice", f[0]),
            ));
        }
        ids.insert(f[0].trim());
        movies.push(Movie {
            title: f[1].to_owned(),
            year,
            genres,
        });
    }
    if movies.is_empty() {
        return Err(RecsysError::parse(path, 0, "empty file: no movies"));
    }
    Ok(movies)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(user: &[u8], item: &[u8], data: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("u.user"), user).unwrap();
        std::fs::write(dir.path().join("u.item"), item).unwrap();
        std::fs::write(dir.path().join("u.data"), data).unwrap();
        dir
    }

    const ITEM: &[u8] =
        b"1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n\
2|Les Mis\xe9rables (1995)|||http://x|0|0|0|0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0\n";
    const USER: &[u8] = b"1|24|M|technician|85711\n2|53|F|other|94043\n";

    #[test]
    fn reads_a_small_folder_with_features() {
        let dir = folder(USER, ITEM, b"2\t1\t4\t10\n1\t2\t5\t11\n");
        let ml = MovieLens::load(dir.path()).unwrap();
        // Dense ids follow u.user / u.item order, not u.data order.
        assert_eq!(ml.ratings.records[0].user, 1);
        assert_eq!(ml.movies[1].title, "Les Misérables (1995)");
        assert_eq!(ml.movies[0].year, Some(1995));
        assert_eq!(ml.movies[1].year, None);
        let items = ml.item_features();
        assert_eq!(items.num_features(), 20);
        assert_eq!(items.row(0), &[(3, 1.0), (4, 1.0), (5, 1.0), (19, 1.0)]);
        let users = ml.user_features();
        assert_eq!(users.row(1), &[(5, 1.0), (8, 1.0), (9, 1.0)]);
        assert_eq!(users.names()[10], "occupation:technician");
    }

    #[test]
    fn bad_side_files_name_the_line() {
        let dir = folder(
            b"1|24|M|technician|85711\n2|old|F|other|1\n",
            ITEM,
            b"1\t1\t4\t10\n",
        );
        let e = MovieLens::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("u.user:2: age 'old'"), "{e}");
        let dir = folder(USER, b"1|Toy Story|x||u|0|0\n", b"1\t1\t4\t10\n");
        let e = MovieLens::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("u.item:1: expected 24"), "{e}");
        let dir = folder(USER, ITEM, b"3\t1\t4\t10\n");
        let e = MovieLens::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("ratings name 3 users"), "{e}");
    }
}
