//! A grid of small images, each with a caption of coloured text pieces underneath, as a
//! PNG: misclassified examples with their true and predicted classes, samples of a data
//! set.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::INK;
use super::png::{Canvas, MAX_SIDE};
use crate::{Error, Result};

const CAPTION_PX: u32 = 13;
const TITLE_PX: u32 = 16;
const PAD: u32 = 6;
/// Space between caption pieces.
const SPACE: u32 = 6;

/// One piece of a caption: text and its colour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caption {
    /// The text.
    pub text: String,
    /// Its colour, RGB.
    pub rgb: [u8; 3],
}

impl Caption {
    /// A piece of caption.
    pub fn new(text: impl Into<String>, rgb: [u8; 3]) -> Self {
        Caption {
            text: text.into(),
            rgb,
        }
    }
}

/// Images of one `[C, H, W]` shape (pixels in `[0, 1]`; grey from the first channel, or
/// RGB from the first three), laid out `per_row` to a row, each scaled up and captioned.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageGrid {
    shape: [usize; 3],
    scale: u32,
    per_row: usize,
    title: Option<String>,
    tiles: Vec<(Vec<f32>, Vec<Caption>)>,
}

impl ImageGrid {
    /// An empty grid of `[C, H, W]` images, drawn at twice their size, ten to a row. Fails
    /// with [`Error::Shape`] when a dimension is 0.
    ///
    /// # Errors
    /// [`Error::Shape`] when a dimension is 0.
    pub fn new(shape: [usize; 3]) -> Result<Self> {
        if shape.contains(&0) {
            return Err(Error::Shape {
                op: "image grid",
                reason: format!("image shape {shape:?} has an empty dimension"),
            });
        }
        Ok(ImageGrid {
            shape,
            scale: 2,
            per_row: 10,
            title: None,
            tiles: Vec::new(),
        })
    }

    /// Pixels per image pixel along each side (1 to 16).
    ///
    /// # Errors
    /// [`Error::Shape`] for a scale outside 1 to 16.
    pub fn scale(mut self, scale: u32) -> Result<Self> {
        if !(1..=16).contains(&scale) {
            return Err(Error::Shape {
                op: "image grid",
                reason: format!("scale {scale}: expected 1 to 16"),
            });
        }
        self.scale = scale;
        Ok(self)
    }

    /// Images per row (1 to 100).
    ///
    /// # Errors
    /// [`Error::Shape`] for a count outside 1 to 100.
    pub fn per_row(mut self, per_row: usize) -> Result<Self> {
        if !(1..=100).contains(&per_row) {
            return Err(Error::Shape {
                op: "image grid",
                reason: format!("{per_row} images per row: expected 1 to 100"),
            });
        }
        self.per_row = per_row;
        Ok(self)
    }

    /// A title above the grid.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// The number of images.
    pub fn len(&self) -> usize {
        self.tiles.len()
    }

    /// Whether the grid has no image.
    pub fn is_empty(&self) -> bool {
        self.tiles.is_empty()
    }

    /// Adds an image and its caption. Fails with [`Error::Shape`], naming the image's
    /// index, when it does not hold `C H W` pixels or a pixel is not finite.
    ///
    /// # Errors
    /// [`Error::Shape`] naming the image's index when it does not hold `C H W` pixels or a pixel is
    /// not finite.
    pub fn push(&mut self, pixels: &[f32], caption: Vec<Caption>) -> Result<()> {
        let [c, h, w] = self.shape;
        let index = self.tiles.len();
        if pixels.len() != c * h * w {
            return Err(Error::Shape {
                op: "image grid",
                reason: format!(
                    "example {index} has {} pixels, a {c}x{h}x{w} image has {}",
                    pixels.len(),
                    c * h * w
                ),
            });
        }
        if let Some(p) = pixels.iter().position(|v| !v.is_finite()) {
            return Err(Error::Shape {
                op: "image grid",
                reason: format!("example {index}: pixel {p} is {}", pixels[p]),
            });
        }
        self.tiles.push((pixels.to_vec(), caption));
        Ok(())
    }

    /// Draws the grid and writes it to `path` as a PNG (creating its folder). Fails with
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
        self.paint_images(&mut canvas, &layout);
        self.write_text(&mut canvas, &layout, &fonts)
            .map_err(plot_err)?;
        canvas.save(path)
    }

    /// Where everything goes; why not when the picture would pass [`MAX_SIDE`].
    fn layout(&self, fonts: &Fonts) -> std::result::Result<Layout, String> {
        let [_, h, w] = self.shape;
        let side =
            |n: usize| (n as u64 * u64::from(self.scale)).min(u64::from(MAX_SIDE) + 1) as u32;
        let (image_w, image_h) = (side(w), side(h));
        let widest_caption = self
            .tiles
            .iter()
            .map(|(_, c)| fonts.caption_width(c))
            .max()
            .unwrap_or(0);
        let tile_w = image_w.max(widest_caption) + 2 * PAD;
        let tile_h = image_h + CAPTION_PX + 3 * PAD;
        let n = self.tiles.len().max(1);
        let (cols, rows) = (n.min(self.per_row) as u64, n.div_ceil(self.per_row) as u64);
        let title_h = self.title.as_ref().map_or(0, |_| TITLE_PX + 2 * PAD);
        let title_w = self
            .title
            .as_ref()
            .map_or(0, |t| Fonts::width(t, &fonts.title) + 2 * PAD);
        let width = (cols * u64::from(tile_w)).max(u64::from(title_w));
        let height = rows * u64::from(tile_h) + u64::from(title_h);
        if width > u64::from(MAX_SIDE) || height > u64::from(MAX_SIDE) {
            return Err(format!(
                "{} images of {h}x{w} at scale {} would make a {width}x{height} picture; \
                 at most {MAX_SIDE} pixels per side (fewer images or a smaller scale)",
                self.tiles.len(),
                self.scale
            ));
        }
        Ok(Layout {
            width: width as u32,
            height: height as u32,
            tile: (tile_w, tile_h),
            image_h,
            title_h,
            per_row: self.per_row,
        })
    }

    /// Each image, scaled up, at its tile's corner.
    fn paint_images(&self, canvas: &mut Canvas, layout: &Layout) {
        let [c, h, w] = self.shape;
        for (i, (pixels, _)) in self.tiles.iter().enumerate() {
            let (x0, y0) = layout.origin(i);
            for y in 0..h {
                for x in 0..w {
                    let value =
                        |ch: usize| (pixels[ch * h * w + y * w + x].clamp(0.0, 1.0) * 255.0) as u8;
                    let rgb = if c >= 3 {
                        [value(0), value(1), value(2)]
                    } else {
                        [value(0); 3]
                    };
                    for dy in 0..self.scale {
                        for dx in 0..self.scale {
                            let px = x0 + x as u32 * self.scale + dx;
                            canvas.put(px, y0 + y as u32 * self.scale + dy, rgb);
                        }
                    }
                }
            }
        }
    }

    /// The title and each tile's coloured caption (or "no examples").
    fn write_text(
        &self,
        canvas: &mut Canvas,
        layout: &Layout,
        fonts: &Fonts,
    ) -> std::result::Result<(), String> {
        let area = canvas.area();
        let draw =
            |r: std::result::Result<(), DrawingAreaErrorKind<_>>| r.map_err(|e| e.to_string());
        if let Some(t) = &self.title {
            let style = fonts.title.pos(Pos::new(HPos::Center, VPos::Top));
            draw(area.draw_text(t, &style, ((layout.width / 2) as i32, PAD as i32)))?;
        }
        if self.tiles.is_empty() {
            let style = top_left(&fonts.caption, &INK);
            let at = (PAD as i32, (layout.title_h + PAD) as i32);
            draw(area.draw_text("no examples", &style, at))?;
        }
        for (i, (_, pieces)) in self.tiles.iter().enumerate() {
            let (x0, y0) = layout.origin(i);
            let mut x = x0 as i32;
            let y = (y0 + layout.image_h + PAD) as i32;
            for piece in pieces {
                let [r, g, b] = piece.rgb;
                let color = RGBColor(r, g, b);
                let style = top_left(&fonts.caption, &color);
                draw(area.draw_text(&piece.text, &style, (x, y)))?;
                x += (Fonts::width(&piece.text, &fonts.caption) + SPACE) as i32;
            }
        }
        area.present().map_err(|e| e.to_string())
    }
}

/// The caption and title fonts (the bundled family, registered first).
struct Fonts {
    caption: TextStyle<'static>,
    title: TextStyle<'static>,
}

impl Fonts {
    fn new() -> Self {
        let caption = TextStyle::from((super::font::FAMILY, CAPTION_PX));
        let title = super::title_style(TITLE_PX);
        Self { caption, title }
    }

    /// `text`'s width in `style`, in pixels (0 when it cannot be measured).
    fn width(text: &str, style: &TextStyle<'_>) -> u32 {
        style.font.box_size(text).map(|(w, _)| w).unwrap_or(0)
    }

    /// A caption's width: its pieces and the spaces between them.
    fn caption_width(&self, pieces: &[Caption]) -> u32 {
        let words: u32 = pieces
            .iter()
            .map(|p| Self::width(&p.text, &self.caption))
            .sum();
        words + SPACE * pieces.len().saturating_sub(1) as u32
    }
}

/// `font` in `rgb`, anchored at its top left.
fn top_left<'a>(font: &TextStyle<'a>, rgb: &'a RGBColor) -> TextStyle<'a> {
    font.color(rgb).pos(Pos::new(HPos::Left, VPos::Top))
}

/// The grid's geometry in pixels.
struct Layout {
    width: u32,
    height: u32,
    /// A tile's width and height (image, caption and padding).
    tile: (u32, u32),
    image_h: u32,
    title_h: u32,
    per_row: usize,
}

impl Layout {
    /// The top left corner of image `i`.
    fn origin(&self, i: usize) -> (u32, u32) {
        let (tile_w, tile_h) = self.tile;
        let x = (i % self.per_row) as u32 * tile_w + PAD;
        let y = (i / self.per_row) as u32 * tile_h + self.title_h + PAD;
        (x, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_and_captions_are_drawn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("grid.png");
        let mut grid = ImageGrid::new([3, 4, 4]).unwrap().title("errors");
        let mut red = vec![0.0f32; 48];
        red[..16].fill(1.0);
        let green = [0, 140, 0];
        grid.push(
            &red,
            vec![Caption::new("3", green), Caption::new("8", [200, 0, 0])],
        )
        .unwrap();
        grid.push(&[0.5; 48], vec![Caption::new("chat", [0, 0, 0])])
            .unwrap();
        grid.save_png(&path).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        let top = TITLE_PX + 2 * PAD + PAD;
        assert_eq!(img.get_pixel(PAD, top).0, [255, 0, 0]);
        assert_eq!(img.get_pixel(PAD + 7, top + 7).0, [255, 0, 0]);
        // The second tile starts one tile width to the right: grey.
        let second = (PAD..img.width())
            .find(|&x| img.get_pixel(x, top).0 == [127, 127, 127])
            .expect("the grey tile");
        assert!(second > PAD + 8, "{second}");
        // The caption under the first image has green and red ink.
        let caption = |x: u32, y: u32| img.get_pixel(x, y).0;
        let rows = top + 8..top + 8 + CAPTION_PX + 2 * PAD;
        let pixels: Vec<[u8; 3]> = rows
            .flat_map(|y| (0..second).map(move |x| (x, y)))
            .map(|(x, y)| caption(x, y))
            .collect();
        assert!(
            pixels
                .iter()
                .any(|p| i32::from(p[1]) > i32::from(p[0]) + 60),
            "green truth"
        );
        assert!(
            pixels
                .iter()
                .any(|p| i32::from(p[0]) > i32::from(p[1]) + 60),
            "red prediction"
        );
    }

    #[test]
    fn bad_images_and_sizes_are_errors_naming_them() {
        assert!(
            ImageGrid::new([1, 0, 4])
                .unwrap_err()
                .to_string()
                .contains("empty dimension")
        );
        let mut grid = ImageGrid::new([1, 4, 4]).unwrap();
        grid.push(&[0.0; 16], vec![]).unwrap();
        let e = grid.push(&[0.0; 15], vec![]).unwrap_err();
        assert!(
            e.to_string()
                .contains("example 1 has 15 pixels, a 1x4x4 image has 16"),
            "{e}"
        );
        let mut nan = [0.0; 16];
        nan[3] = f32::NAN;
        let e = grid.push(&nan, vec![]).unwrap_err();
        assert!(e.to_string().contains("example 1: pixel 3 is NaN"), "{e}");
        assert!(grid.clone().scale(0).is_err() && grid.clone().per_row(0).is_err());
        let huge = ImageGrid::new([1, 2000, 2000]).unwrap().scale(16).unwrap();
        let e = huge.save_png(Path::new("never-written.png")).unwrap_err();
        assert!(
            e.to_string().contains("at most 16384 pixels per side"),
            "{e}"
        );
        assert!(!Path::new("never-written.png").exists());
    }
}
