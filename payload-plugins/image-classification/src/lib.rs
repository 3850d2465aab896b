//! Image-classification requests: a generated picture (smooth gradients plus seeded noise, so it compresses like
//! a photo rather than like a blank page) of the configured size, PNG-encoded or as raw interleaved bytes.
//!
//! [payload.config]
//! width = 224
//! height = 224
//! channels = 3            # 1 (grey), 3 (RGB) or 4 (RGBA)
//! encoding = "png"        # or "raw"
//! noise = 24              # 0-255: how much per-pixel noise on top of the gradients

use std::sync::OnceLock;

use plugin_kit::{Rng, parse_config};
use serde::Deserialize;

wit_bindgen::generate!({ path: "../wit", world: "generator" });

#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "snake_case")]
enum Encoding {
    Png,
    Raw,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    width: u32,
    height: u32,
    #[serde(default = "three")]
    channels: u8,
    #[serde(default = "png")]
    encoding: Encoding,
    #[serde(default = "noise")]
    noise: u8,
}

fn three() -> u8 {
    3
}
fn png() -> Encoding {
    Encoding::Png
}
fn noise() -> u8 {
    24
}

static CONFIG: OnceLock<Config> = OnceLock::new();

struct ImageClassification;

impl Guest for ImageClassification {
    fn init(config: String) -> Result<(), String> {
        let config: Config = parse_config(&config)?;
        if !(1..=8192).contains(&config.width) || !(1..=8192).contains(&config.height) {
            return Err("width and height must be 1 to 8192".into());
        }
        if ![1, 3, 4].contains(&config.channels) {
            return Err("channels must be 1, 3 or 4".into());
        }
        let _ = CONFIG.set(config);
        Ok(())
    }

    fn generate(ctx: Context) -> Result<Request, String> {
        let config = CONFIG.get().ok_or("generate before init")?;
        let mut rng = Rng::new(ctx.seed);
        let (width, height, channels) = (config.width as usize, config.height as usize, config.channels as usize);
        // Each channel is a gradient at its own seeded angle and phase.
        let waves: Vec<(f64, f64, f64)> =
            (0..channels).map(|_| (rng.unit() * 6.0 - 3.0, rng.unit() * 6.0 - 3.0, rng.unit() * 255.0)).collect();
        let mut pixels = Vec::with_capacity(width * height * channels);
        for y in 0..height {
            for x in 0..width {
                let (u, v) = (x as f64 / width as f64, y as f64 / height as f64);
                for (channel, &(a, b, phase)) in waves.iter().enumerate() {
                    let base = if channels == 4 && channel == 3 {
                        255.0
                    } else {
                        (phase + 128.0 * (a * u + b * v)).rem_euclid(256.0)
                    };
                    let jitter = (rng.unit() - 0.5) * f64::from(config.noise);
                    pixels.push((base + jitter).clamp(0.0, 255.0) as u8);
                }
            }
        }
        let shape = format!("{height},{width},{channels}");
        match config.encoding {
            Encoding::Raw => Ok(Request {
                body: pixels,
                content_type: Some("application/octet-stream".into()),
                headers: vec![("x-image-shape".into(), shape)],
                path_suffix: None,
            }),
            Encoding::Png => {
                let color = match channels {
                    1 => png::ColorType::Grayscale,
                    3 => png::ColorType::Rgb,
                    _ => png::ColorType::Rgba,
                };
                let mut body = Vec::new();
                let mut encoder = png::Encoder::new(&mut body, config.width, config.height);
                encoder.set_color(color);
                encoder.set_depth(png::BitDepth::Eight);
                let mut writer = encoder.write_header().map_err(|error| error.to_string())?;
                writer.write_image_data(&pixels).map_err(|error| error.to_string())?;
                writer.finish().map_err(|error| error.to_string())?;
                Ok(Request {
                    body,
                    content_type: Some("image/png".into()),
                    headers: vec![("x-image-shape".into(), shape)],
                    path_suffix: None,
                })
            }
        }
    }
}

export!(ImageClassification);
