//! A labelled heat map as a PNG: one coloured cell per value, row labels on the left, column
//! labels along the top (turned upright when they are wider than a cell), optional text in
//! each cell, a title, axis descriptions and a colour bar. Attention weights and confusion
//! matrices are drawn with it.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::FontTransform;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::png::{Canvas, MAX_SIDE};
use super::{INK, ramp};
use crate::{Error, Result};

const LABEL_PX: u32 = 14;
const TITLE_PX: u32 = 16;
const CELL_TEXT_PX: u32 = 11;
const PAD: u32 = 8;
const GAP: u32 = 6;
const BAR_GAP: u32 = 16;
const BAR_WIDTH: u32 = 14;

/// A heat map of a `rows x cols` grid of values, coloured from white at the low end of the
/// range to dark blue at the high end.
///
/// ```no_run
/// use kiln_core::plot::HeatMap;
/// let map = HeatMap::new(
///     vec![vec![0.9, 0.1], vec![0.2, 0.8]],
///     vec!["i".into(), "am".into()],
///     vec!["je".into(), "suis".into()],
/// )?
/// .title("attention")
/// .x_desc("input")
/// .y_desc("output");
/// map.save_png(std::path::Path::new("attention.png"))?;
/// # Ok::<(), kiln_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct HeatMap {
    values: Vec<Vec<f32>>,
    rows: Vec<String>,
    cols: Vec<String>,
    cell_text: Option<Vec<Vec<String>>>,
    range: (f32, f32),
    title: Option<String>,
    x_desc: Option<String>,
    y_desc: Option<String>,
    cell: u32,
}

impl HeatMap {
    /// A heat map of `values` (one inner vector per row) with a label per row and per
    /// column, over the range `[0, 1]` (see [`HeatMap::range`]).
    ///
    /// Fails with [`Error::Shape`] when there are no values, a row's length differs from
    /// the first's, the label counts do not match, or a value is not finite (each message
    /// names the row or column).
    ///
    /// # Errors
    /// [`Error::Shape`] when there are no values, a row's length differs from the first's, the
    /// label counts do not match, or a value is not finite.
    pub fn new(values: Vec<Vec<f32>>, rows: Vec<String>, cols: Vec<String>) -> Result<Self> {
        let bad = |reason: String| Error::Shape {
            op: "heat map",
            reason,
        };
        let width = values.first().map_or(0, Vec::len);
        if values.is_empty() || width == 0 {
            return Err(bad(format!(
                "{}x{width} values: a heat map needs at least one row and one column",
                values.len()
            )));
        }
        if let Some((r, row)) = values.iter().enumerate().find(|(_, r)| r.len() != width) {
            return Err(bad(format!(
                "row {r} has {} values, row 0 has {width}",
                row.len()
            )));
        }
        if rows.len() != values.len() || cols.len() != width {
            return Err(bad(format!(
                "{}x{width} values for {} row and {} column labels",
                values.len(),
                rows.len(),
                cols.len()
            )));
        }
        for (r, row) in values.iter().enumerate() {
            if let Some(c) = row.iter().position(|v| !v.is_finite()) {
                return Err(bad(format!("value at row {r}, column {c} is {}", row[c])));
            }
        }
        Ok(HeatMap {
            values,
            rows,
            cols,
            cell_text: None,
            range: (0.0, 1.0),
            title: None,
            x_desc: None,
            y_desc: None,
            cell: 28,
        })
    }

    /// The values drawn as white and as dark blue (values outside are clamped). Fails with
    /// [`Error::Shape`] unless `low < high`, both finite.
    ///
    /// # Errors
    /// [`Error::Shape`] unless `low < high`, both finite.
    pub fn range(mut self, low: f32, high: f32) -> Result<Self> {
        if !(low.is_finite() && high.is_finite() && low < high) {
            return Err(Error::Shape {
                op: "heat map",
                reason: format!("range {low}..{high}: expected finite low < high"),
            });
        }
        self.range = (low, high);
        Ok(self)
    }

    /// Text written in each cell (counts, percentages), one inner vector per row. Fails
    /// with [`Error::Shape`] unless it has the values' shape.
    ///
    /// # Errors
    /// [`Error::Shape`] unless the text has the values' shape.
    pub fn cell_text(mut self, text: Vec<Vec<String>>) -> Result<Self> {
        let fits =
            text.len() == self.values.len() && text.iter().all(|row| row.len() == self.cols.len());
        if !fits {
            let (r, c) = (self.values.len(), self.cols.len());
            let (rows, first) = (text.len(), text.first().map_or(0, Vec::len));
            return Err(Error::Shape {
                op: "heat map",
                reason: format!(
                    "cell text for a {r}x{c} map has {rows} rows (the first of {first})"
                ),
            });
        }
        self.cell_text = Some(text);
        Ok(self)
    }

    /// A title above the map.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// What the columns are (written above their labels).
    pub fn x_desc(mut self, desc: impl Into<String>) -> Self {
        self.x_desc = Some(desc.into());
        self
    }

    /// What the rows are (written upright left of their labels).
    pub fn y_desc(mut self, desc: impl Into<String>) -> Self {
        self.y_desc = Some(desc.into());
        self
    }

    /// The side of a cell in pixels (28 by default; 8 to 200).
    ///
    /// # Errors
    /// [`Error::Shape`] for a size outside 8 to 200 pixels.
    pub fn cell_size(mut self, pixels: u32) -> Result<Self> {
        if !(8..=200).contains(&pixels) {
            return Err(Error::Shape {
                op: "heat map",
                reason: format!("cell size {pixels} px: expected 8 to 200"),
            });
        }
        self.cell = pixels;
        Ok(self)
    }

    /// The share of the range `value` stands at, in `[0, 1]`.
    fn share(&self, value: f32) -> f64 {
        let (lo, hi) = self.range;
        (((value - lo) / (hi - lo)).clamp(0.0, 1.0)) as f64
    }

    /// Draws the map and writes it to `path` as a PNG (creating its folder). Fails with
    /// [`Error::Plot`] when the picture would be wider or taller than 16,384 pixels or
    /// cannot be written.
    ///
    /// # Errors
    /// [`Error::Plot`] when the picture would be wider or taller than 16,384 pixels or cannot be
    /// written.
    pub fn save_png(&self, path: &Path) -> Result<()> {
        let plot_err = |reason: String| Error::Plot {
            path: path.to_path_buf(),
            reason,
        };
        super::font::register();
        let fonts = Fonts::new();
        let layout = self.layout(&fonts).map_err(plot_err)?;
        let mut canvas = Canvas::new(layout.width, layout.height);
        self.paint_bar(&mut canvas, &layout);
        {
            let area = canvas.area();
            self.draw_headings(&area, &layout, &fonts)
                .and_then(|()| self.draw_cells(&area, &layout, &fonts))
                .and_then(|()| self.draw_ticks(&area, &layout, &fonts))
                .and_then(|()| drawn(area.present()))
                .map_err(plot_err)?;
        }
        canvas.save(path)
    }

    /// Where everything goes; why not when the picture would pass [`MAX_SIDE`].
    fn layout(&self, fonts: &Fonts) -> std::result::Result<Layout, String> {
        let widest = |labels: &[String]| {
            labels
                .iter()
                .map(|l| Fonts::width(l, &fonts.label))
                .max()
                .unwrap_or(0)
        };
        let (rows, cols, cell) = (self.rows.len() as u32, self.cols.len() as u32, self.cell);
        let row_labels_w = widest(&self.rows);
        let col_labels_w = widest(&self.cols);
        // Column labels lie flat when each fits its cell, else they stand upright.
        let upright = col_labels_w + 2 > cell;
        let col_labels_h = if upright { col_labels_w } else { LABEL_PX + 2 };
        let line = |text: &Option<String>, px: u32| text.as_ref().map_or(0, |_| px + GAP);

        let left = PAD + line(&self.y_desc, LABEL_PX) + row_labels_w + GAP;
        let top =
            PAD + line(&self.title, TITLE_PX) + line(&self.x_desc, LABEL_PX) + col_labels_h + GAP;
        let ticks_w = widest(&self.ticks().map(|(_, text)| text));
        let grid_w = cols.saturating_mul(cell);
        let grid_h = rows.saturating_mul(cell);
        let title_w = self
            .title
            .as_ref()
            .map_or(0, |t| Fonts::width(t, &fonts.title));
        let width =
            (left + grid_w + BAR_GAP + BAR_WIDTH + GAP + ticks_w + PAD).max(PAD * 2 + title_w);
        let height = top + grid_h.max(LABEL_PX * 3) + PAD;
        if u64::from(cols) * u64::from(cell) > u64::from(MAX_SIDE)
            || u64::from(rows) * u64::from(cell) > u64::from(MAX_SIDE)
            || width > MAX_SIDE
            || height > MAX_SIDE
        {
            return Err(format!(
                "a {rows}x{cols} heat map with {cell}-pixel cells would be {width}x{height} \
                 pixels; at most {MAX_SIDE} per side (smaller cells or fewer labels)"
            ));
        }
        Ok(Layout {
            width,
            height,
            left,
            top,
            grid_w,
            grid_h,
            upright,
            bar_x: left + grid_w + BAR_GAP,
            bar_h: grid_h.max(LABEL_PX * 3),
        })
    }

    /// The colour bar: the ramp from the bottom (low) to the top (high), pixel rows.
    fn paint_bar(&self, canvas: &mut Canvas, layout: &Layout) {
        let (bar_x, bar_h) = (layout.bar_x, layout.bar_h);
        for step in 0..bar_h {
            let share = 1.0 - f64::from(step) / f64::from((bar_h - 1).max(1));
            let RGBColor(r, g, b) = ramp(share);
            for x in bar_x..bar_x + BAR_WIDTH {
                canvas.put(x, layout.top + step, [r, g, b]);
            }
        }
    }

    /// The title, the axes' descriptions and the column labels.
    fn draw_headings(
        &self,
        area: &Area<'_>,
        layout: &Layout,
        fonts: &Fonts,
    ) -> std::result::Result<(), String> {
        let label = &fonts.label;
        let mut y = PAD as i32;
        if let Some(t) = &self.title {
            let style = fonts.title.pos(Pos::new(HPos::Center, VPos::Top));
            drawn(area.draw_text(t, &style, ((layout.width / 2) as i32, y)))?;
            y += (TITLE_PX + GAP) as i32;
        }
        if let Some(d) = &self.x_desc {
            let x = (layout.left + layout.grid_w / 2) as i32;
            drawn(area.draw_text(d, &label.pos(Pos::new(HPos::Center, VPos::Top)), (x, y)))?;
        }
        if let Some(d) = &self.y_desc {
            let style = label
                .transform(FontTransform::Rotate270)
                .pos(Pos::new(HPos::Center, VPos::Top));
            let at = (PAD as i32, (layout.top + layout.grid_h / 2) as i32);
            drawn(area.draw_text(d, &style, at))?;
        }
        let (left, top, cell) = (layout.left as i32, layout.top as i32, self.cell as i32);
        for (c, text) in self.cols.iter().enumerate() {
            let x = left + c as i32 * cell + cell / 2;
            let style = if layout.upright {
                label
                    .transform(FontTransform::Rotate270)
                    .pos(Pos::new(HPos::Left, VPos::Center))
            } else {
                label.pos(Pos::new(HPos::Center, VPos::Bottom))
            };
            drawn(area.draw_text(text, &style, (x, top - GAP as i32)))?;
        }
        Ok(())
    }

    /// Each row's label and its cells, coloured by value, with their texts.
    fn draw_cells(
        &self,
        area: &Area<'_>,
        layout: &Layout,
        fonts: &Fonts,
    ) -> std::result::Result<(), String> {
        let (left, top, cell) = (layout.left as i32, layout.top as i32, self.cell as i32);
        let cell_font = TextStyle::from((super::font::FAMILY, CELL_TEXT_PX))
            .pos(Pos::new(HPos::Center, VPos::Center));
        for (r, row) in self.values.iter().enumerate() {
            let y0 = top + r as i32 * cell;
            let style = fonts.label.pos(Pos::new(HPos::Right, VPos::Center));
            drawn(area.draw_text(&self.rows[r], &style, (left - GAP as i32, y0 + cell / 2)))?;
            for (c, &value) in row.iter().enumerate() {
                let x0 = left + c as i32 * cell;
                let share = self.share(value);
                let rect = [(x0, y0), (x0 + cell - 1, y0 + cell - 1)];
                drawn(area.draw(&Rectangle::new(rect, ramp(share).filled())))?;
                if let Some(text) = self.cell_text.as_ref().map(|t| &t[r][c]) {
                    // White on the dark half of the ramp, black on the light half.
                    let ink = if share > 0.5 { WHITE } else { INK };
                    let style = cell_font.color(&ink);
                    drawn(area.draw_text(text, &style, (x0 + cell / 2, y0 + cell / 2)))?;
                }
            }
        }
        Ok(())
    }

    /// The colour bar's frame and its ticks' values.
    fn draw_ticks(
        &self,
        area: &Area<'_>,
        layout: &Layout,
        fonts: &Fonts,
    ) -> std::result::Result<(), String> {
        let (bar_x, bar_h, top) = (layout.bar_x as i32, layout.bar_h as i32, layout.top as i32);
        let frame = [
            (bar_x, top),
            (bar_x + BAR_WIDTH as i32 - 1, top + bar_h - 1),
        ];
        drawn(area.draw(&Rectangle::new(frame, INK.stroke_width(1))))?;
        for (share, text) in self.ticks() {
            let y = top + ((1.0 - share) * f64::from(bar_h - 1)).round() as i32;
            let style = fonts.label.pos(Pos::new(HPos::Left, VPos::Center));
            drawn(area.draw_text(&text, &style, (bar_x + (BAR_WIDTH + GAP) as i32, y)))?;
        }
        Ok(())
    }

    /// The colour bar's ticks: the share of the bar and the value's text, low, middle, high.
    fn ticks(&self) -> [(f64, String); 3] {
        let (lo, hi) = self.range;
        let text = |v: f32| {
            let s = format!("{v:.3}");
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        };
        [
            (0.0, text(lo)),
            (0.5, text((lo + hi) / 2.0)),
            (1.0, text(hi)),
        ]
    }
}

/// The picture's drawing area.
type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// A drawing call's error as text.
fn drawn<E: std::error::Error + Send + Sync>(
    r: std::result::Result<(), DrawingAreaErrorKind<E>>,
) -> std::result::Result<(), String> {
    r.map_err(|e| e.to_string())
}

/// The label and title fonts (the bundled family, registered first).
struct Fonts {
    label: TextStyle<'static>,
    title: TextStyle<'static>,
}

impl Fonts {
    fn new() -> Self {
        let label = TextStyle::from((super::font::FAMILY, LABEL_PX)).color(&INK);
        let title = super::title_style(TITLE_PX);
        Self { label, title }
    }

    /// `text`'s width in `style`, in pixels (its size per character when it cannot be
    /// measured).
    fn width(text: &str, style: &TextStyle<'_>) -> u32 {
        style
            .font
            .box_size(text)
            .map(|(w, _)| w)
            .unwrap_or(text.chars().count() as u32 * style.font.get_size() as u32)
    }
}

/// The map's geometry in pixels.
struct Layout {
    width: u32,
    height: u32,
    /// The grid's top left corner.
    left: u32,
    top: u32,
    grid_w: u32,
    grid_h: u32,
    /// Whether the column labels stand upright.
    upright: bool,
    /// The colour bar's left edge and height.
    bar_x: u32,
    bar_h: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn bad_shapes_and_values_are_errors_naming_them() {
        let e = HeatMap::new(vec![], vec![], vec![]).unwrap_err();
        assert!(e.to_string().contains("at least one row"), "{e}");
        let ragged = vec![vec![0.5, 0.5], vec![0.2, 0.3, 0.5]];
        let e = HeatMap::new(ragged, labels("a b"), labels("c d")).unwrap_err();
        assert!(
            e.to_string().contains("row 1 has 3 values, row 0 has 2"),
            "{e}"
        );
        let e = HeatMap::new(vec![vec![1.0]], labels("a b"), labels("c")).unwrap_err();
        assert!(
            e.to_string()
                .contains("1x1 values for 2 row and 1 column labels"),
            "{e}"
        );
        let e = HeatMap::new(vec![vec![0.0, f32::NAN]], labels("a"), labels("b c")).unwrap_err();
        assert!(e.to_string().contains("row 0, column 1 is NaN"), "{e}");
        let map = HeatMap::new(vec![vec![0.0]], labels("a"), labels("b")).unwrap();
        assert!(map.clone().range(1.0, 1.0).is_err());
        assert!(map.clone().cell_size(3).is_err());
        let e = map.cell_text(vec![vec![]]).unwrap_err();
        assert!(e.to_string().contains("cell text for a 1x1 map"), "{e}");
    }

    #[test]
    fn cells_take_the_ramp_colour_of_their_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("map.png");
        let map = HeatMap::new(
            vec![vec![1.0, 0.0], vec![0.25, 0.75]],
            labels("row0 row1"),
            labels("c0 c1"),
        )
        .unwrap()
        .title("a title")
        .x_desc("columns")
        .y_desc("rows");
        map.save_png(&path).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        // Find the grid: the first pixel of the darkest blue is cell (0, 0)'s corner.
        let dark = image::Rgb(super::super::RAMP_HIGH);
        let (x0, y0) = img
            .enumerate_pixels()
            .find(|(_, _, p)| **p == dark)
            .map(|(x, y, _)| (x, y))
            .expect("a full-range cell");
        let at = |r: u32, c: u32| *img.get_pixel(x0 + c * 28 + 14, y0 + r * 28 + 3);
        assert_eq!(at(0, 0), dark);
        assert_eq!(at(0, 1), image::Rgb([255, 255, 255]));
        let quarter = at(1, 0);
        let three_quarters = at(1, 1);
        assert!(quarter[0] > three_quarters[0] && three_quarters[0] > dark[0]);
        // The colour bar right of the grid: dark at the top, white at the bottom.
        let bar = (x0 + 56..img.width())
            .find(|&x| {
                let p = img.get_pixel(x, y0 + 2);
                p[2] > 90 && p[0] < 20
            })
            .expect("the colour bar's top");
        assert!(img.get_pixel(bar + 3, y0 + 56 - 3)[0] > 245);
        assert!(img.get_pixel(bar + 3, y0 + 28)[0] < 200);
        // Labels are drawn: some dark text pixels left of the grid and above it.
        let inked = |xs: std::ops::Range<u32>, ys: std::ops::Range<u32>| {
            ys.flat_map(|y| xs.clone().map(move |x| (x, y)))
                .any(|(x, y)| img.get_pixel(x, y)[0] < 100)
        };
        assert!(inked(0..x0, y0..y0 + 56), "row labels");
        assert!(inked(x0..x0 + 56, 0..y0), "column labels");
    }

    #[test]
    fn accented_and_greek_labels_draw_and_long_ones_stand_upright() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("map.png");
        let cols = labels("été garçon Ωμέγα ▁word");
        let map = HeatMap::new(vec![vec![0.1, 0.2, 0.3, 0.4]], labels("ça"), cols).unwrap();
        map.save_png(&path).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        // Upright labels make the picture taller than wide labels would.
        assert!(img.height() > 28 + 2 * PAD + 40, "{:?}", img.dimensions());
    }

    #[test]
    fn a_map_too_big_to_draw_is_an_error() {
        let n = 1000;
        let map = HeatMap::new(vec![vec![0.5; n]; 2], labels("a b"), vec!["x".into(); n]).unwrap();
        let e = map.save_png(Path::new("never-written.png")).unwrap_err();
        assert!(e.to_string().contains("at most 16384 per side"), "{e}");
        assert!(!Path::new("never-written.png").exists());
    }
}
