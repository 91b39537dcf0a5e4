//! `skiff image pull|import|ls|rm`: the node's image store from the command line.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, bail};
use runtime::image::pull::{Credentials, LayerProgress, RegistryConfig};
use runtime::image::{ImageRef, Store};

use crate::config::ImageCommand;

pub fn run(cmd: ImageCommand) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::Pull { reference, store, mirrors, plain_http, username } => {
            let store = open(&store.images_dir())?;
            let image = ImageRef::parse(&reference).with_context(|| format!("{reference:?} is not an image reference"))?;
            let mut config = RegistryConfig { plain_http, ..Default::default() };
            config.mirrors = crate::config::parse_mirrors("--mirror", &mirrors).map_err(anyhow::Error::msg)?;
            let credentials = match username {
                Some(username) => Credentials::Basic {
                    username,
                    password: std::env::var("SKIFF_REGISTRY_PASSWORD")
                        .context("--username needs the password in SKIFF_REGISTRY_PASSWORD")?,
                },
                None => Credentials::Anonymous,
            };
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let progress = ProgressBar::default();
            let record = rt
                .block_on(runtime::image::pull::Puller::new(config).pull(&store, &image, &credentials, &|p| progress.update(p)))
                .with_context(|| format!("pulling {image}"))?;
            progress.finish();
            println!("{} {}", record.reference, record.repo_digest());
            Ok(())
        }
        ImageCommand::Import { path, store } => {
            let store = open(&store.images_dir())?;
            let refs = runtime::image::import::import(&store, &path).with_context(|| format!("importing {}", path.display()))?;
            if refs.is_empty() {
                bail!("{} holds no tagged image", path.display());
            }
            for r in refs {
                println!("imported {r}");
            }
            Ok(())
        }
        ImageCommand::Ls { store } => {
            let store = open(&store.images_dir())?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{:<50} {:<14} {:>10}  CREATED", "IMAGE", "ID", "SIZE")?;
            for img in store.list()? {
                let id: String = img.id().trim_start_matches("sha256:").chars().take(12).collect();
                writeln!(
                    out,
                    "{:<50} {:<14} {:>10}  {}",
                    img.reference.to_string(),
                    id,
                    human_size(img.size),
                    img.created.as_deref().unwrap_or("-")
                )?;
            }
            Ok(())
        }
        ImageCommand::Rm { images, store } => {
            let store = open(&store.images_dir())?;
            for name in images {
                let removed = store.remove(&name).with_context(|| format!("removing {name}"))?;
                for r in removed {
                    println!("removed {r}");
                }
            }
            Ok(())
        }
    }
}

fn open(dir: &std::path::Path) -> anyhow::Result<Store> {
    Store::open(dir).with_context(|| format!("cannot open the image store at {}", dir.display()))
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1}{}", UNITS[unit])
}

/// One line per layer on a terminal-less stderr is noise: show a single line with the total,
/// rewritten in place.
#[derive(Default)]
struct ProgressBar {
    layers: std::sync::Mutex<BTreeMap<String, (u64, u64)>>,
}

impl ProgressBar {
    fn update(&self, p: LayerProgress) {
        let mut layers = self.layers.lock().unwrap_or_else(|e| e.into_inner());
        layers.insert(p.digest, (p.done, p.total));
        let (done, total) = layers.values().fold((0, 0), |(d, t), (a, b)| (d + a, t + b));
        let pct = if total > 0 { done * 100 / total } else { 0 };
        let width = 30usize;
        let filled = (pct as usize * width / 100).min(width);
        eprint!(
            "\r[{}{}] {pct:>3}%  {} / {}  ({} layers)",
            "=".repeat(filled),
            " ".repeat(width - filled),
            human_size(done),
            human_size(total),
            layers.len()
        );
    }

    fn finish(&self) {
        eprintln!();
    }
}
