//! `config`: the image's /etc/portcullis/portcullisd.toml parses and
//! validates as the listener will read it at boot, and is the one in
//! /etc/portcullis today (an edit not yet rebuilt into the image is a
//! warning: the next boot runs the old one).

use super::{fail, pass, warn, Ctx, CONFIG};
use crate::preflight::report::Check;
use std::path::Path;

const ID: &str = "config";

pub fn config(ctx: &Ctx<'_>) -> Check {
    let settings = match &ctx.settings {
        Ok(s) => s,
        Err(e) if ctx.image.file(CONFIG).is_none() => {
            return fail(
                ID,
                format!("{e}: the listener has no config"),
                format!(
                    "copy /usr/share/portcullis/portcullisd.toml to /etc/portcullis/, then run {}",
                    ctx.rebuild()
                ),
            )
        }
        Err(e) => {
            return fail(
                ID,
                crate::text::clip_message(e),
                format!(
                    "correct {CONFIG} (`portcullisd check` shows the same error), then run {}",
                    ctx.rebuild()
                ),
            )
        }
    };
    if let Some(a) = settings.listen.iter().find(|a| a.port() == 0) {
        return fail(
            ID,
            format!("listen = \"{a}\": port 0 is a random port at boot"),
            format!("give a port (22) in {CONFIG}, then run {}", ctx.rebuild()),
        );
    }
    let source = host_config(ctx);
    let here = ctx.system.read_file(Path::new(&source));
    if here.is_some_and(|h| Some(h.as_slice()) != ctx.image.file(CONFIG)) {
        return warn(
            ID,
            format!("{source} changed since the image was built: the next boot uses the old one"),
            format!("run {}", ctx.rebuild()),
        );
    }
    let listen: Vec<String> = settings.listen.iter().map(|a| a.to_string()).collect();
    pass(
        ID,
        format!(
            "valid; listens on {}; backend {}",
            listen.join(", "),
            super::backend::name(settings.backend)
        ),
    )
}

/// The host file the hooks copy into the image as [`CONFIG`]:
/// `PORTCULLIS_CONFIG` of /etc/portcullis/initramfs.conf (the last
/// assignment, as the shell that sources it sees), else [`CONFIG`].
fn host_config(ctx: &Ctx<'_>) -> String {
    let conf = ctx
        .system
        .read_file(Path::new("/etc/portcullis/initramfs.conf"))
        .unwrap_or_default();
    String::from_utf8_lossy(&conf)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("PORTCULLIS_CONFIG="))
        .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
        .rfind(|v| v.starts_with('/'))
        .unwrap_or_else(|| CONFIG.to_string())
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::field_reassign_with_default
)]
mod tests {
    use super::super::fixture::{check, file};
    use crate::preflight::image::Image;
    use crate::preflight::report::Status;
    use crate::preflight::system::fake::FakeSystem;

    const GOOD: &[u8] = b"listen = [\"0.0.0.0:22\"]\n";

    #[test]
    fn passes_on_a_valid_config() {
        let mut img = Image::default();
        file(&mut img, "etc/portcullis/portcullisd.toml", GOOD);
        let mut sys = FakeSystem::default();
        sys.files
            .insert("/etc/portcullis/portcullisd.toml".into(), GOOD.to_vec());
        let c = check("config", &img, &sys, "");
        assert_eq!(c.status, Status::Pass, "{c:?}");
        assert_eq!(c.summary, "valid; listens on 0.0.0.0:22; backend auto");
    }

    #[test]
    fn fails_when_missing_invalid_or_on_port_0() {
        let sys = FakeSystem::default();
        let c = check("config", &Image::default(), &sys, "");
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.unwrap().starts_with("copy /usr/share/portcullis"));
        let mut img = Image::default();
        file(&mut img, "etc/portcullis/portcullisd.toml", b"lisen = 1\n");
        let c = check("config", &img, &sys, "");
        assert_eq!(c.status, Status::Fail);
        assert!(c.summary.contains("lisen"), "{c:?}");
        let mut img = Image::default();
        file(
            &mut img,
            "etc/portcullis/portcullisd.toml",
            b"listen = [\"127.0.0.1:0\"]\n",
        );
        let c = check("config", &img, &sys, "");
        assert_eq!(c.status, Status::Fail);
        assert!(c.summary.contains("port 0"), "{c:?}");
    }

    #[test]
    fn warns_when_the_config_changed_since_the_build() {
        let mut img = Image::default();
        file(&mut img, "etc/portcullis/portcullisd.toml", GOOD);
        let mut sys = FakeSystem::default();
        sys.files.insert(
            "/etc/portcullis/portcullisd.toml".into(),
            b"listen = [\"0.0.0.0:2222\"]\n".to_vec(),
        );
        let c = check("config", &img, &sys, "");
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(c.fix.unwrap().starts_with("run "));
        // PORTCULLIS_CONFIG in initramfs.conf names the file the hooks
        // copy: that one is compared, not /etc/portcullis/portcullisd.toml.
        sys.files.insert(
            "/etc/portcullis/initramfs.conf".into(),
            b"#PORTCULLIS_CONFIG=/nowhere\nPORTCULLIS_CONFIG=\"/srv/p.toml\"\n".to_vec(),
        );
        sys.files.insert("/srv/p.toml".into(), GOOD.to_vec());
        let c = check("config", &img, &sys, "");
        assert_eq!(c.status, Status::Pass, "{c:?}");
        sys.files
            .insert("/srv/p.toml".into(), b"listen = [\"0.0.0.0:2\"]\n".to_vec());
        let c = check("config", &img, &sys, "");
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(c.summary.starts_with("/srv/p.toml changed"), "{c:?}");
    }
}
