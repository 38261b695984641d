//! Kernel modules in an image: which kernel releases it carries modules
//! for, whether a module is there (`.ko`, `.ko.zst`, `.ko.xz`, `.ko.gz`),
//! and whether it is built into the kernel (`modules.builtin`). Module
//! names compare with `-` and `_` as one, as modprobe does.

use super::Ctx;
use crate::preflight::image::Image;

/// The `lib/modules/REL` (or `usr/lib/modules/REL`) releases in the image.
pub fn kernels(image: &Image) -> Vec<String> {
    let mut out: Vec<String> = image
        .paths()
        .filter_map(|p| {
            let rest = p.strip_prefix("usr/").unwrap_or(p);
            let rel = rest.strip_prefix("lib/modules/")?.split('/').next()?;
            (!rel.is_empty()).then(|| rel.to_string())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `e1000e`, `dm_crypt`: the name modprobe knows a file by.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a `.ko*` file name.
fn module_of(file: &str) -> Option<String> {
    let stem = [".ko", ".ko.zst", ".ko.xz", ".ko.gz"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext))?;
    Some(normalize(stem))
}

/// Whether the image holds module `name` for kernel `release`.
pub fn in_image(image: &Image, release: &str, name: &str) -> bool {
    let want = normalize(name);
    let dirs = [
        format!("lib/modules/{release}/"),
        format!("usr/lib/modules/{release}/"),
    ];
    image.paths().any(|p| {
        dirs.iter().any(|d| p.starts_with(d.as_str()))
            && p.rsplit('/').next().and_then(module_of).as_deref() == Some(want.as_str())
    })
}

/// Whether a `modules.builtin` text lists module `name`.
pub fn builtin_lists(text: &str, name: &str) -> bool {
    let want = normalize(name);
    text.lines()
        .filter_map(|l| l.trim().rsplit('/').next())
        .filter_map(module_of)
        .any(|m| m == want)
}

/// Where module `name` is for the image's kernel: in the image, built in,
/// or missing. `None` when the kernel release is not known.
pub fn find(ctx: &Ctx<'_>, name: &str) -> Option<Found> {
    let rel = ctx.kernel.as_deref()?;
    if in_image(ctx.image, rel, name) {
        return Some(Found::Image);
    }
    let in_image_builtin = [
        format!("lib/modules/{rel}/modules.builtin"),
        format!("usr/lib/modules/{rel}/modules.builtin"),
    ]
    .iter()
    .filter_map(|p| ctx.image.file(p))
    .any(|t| builtin_lists(&String::from_utf8_lossy(t), name));
    if in_image_builtin
        || ctx
            .system
            .modules_builtin(rel)
            .is_some_and(|t| builtin_lists(&t, name))
    {
        return Some(Found::BuiltIn);
    }
    Some(Found::Missing)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Image,
    BuiltIn,
    Missing,
}

#[cfg(test)]
mod tests {
    use super::super::fixture::file;
    use super::*;

    #[test]
    fn finds_modules_however_compressed() {
        let mut img = Image::default();
        file(
            &mut img,
            "usr/lib/modules/6.1.0-test/kernel/drivers/md/dm-crypt.ko.zst",
            b"",
        );
        file(
            &mut img,
            "lib/modules/6.1.0-test/kernel/drivers/net/virtio_net.ko.xz",
            b"",
        );
        file(&mut img, "lib/modules/6.1.0-test/modules.dep", b"");
        assert_eq!(kernels(&img), vec!["6.1.0-test".to_string()]);
        assert!(in_image(&img, "6.1.0-test", "dm_crypt"));
        assert!(in_image(&img, "6.1.0-test", "virtio-net"));
        assert!(!in_image(&img, "6.1.0-other", "virtio_net"));
        assert!(!in_image(&img, "6.1.0-test", "e1000e"));
        assert!(builtin_lists(
            "kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko\n",
            "e1000e"
        ));
        assert!(!builtin_lists("kernel/drivers/net/e1000.ko\n", "e1000e"));
    }
}
