//! Which image each service runs, where that choice came from, and what kind of image it is.
//!
//! Precedence, per service: a builder call ([`StackBuilder::image`](crate::StackBuilder::image)),
//! then the environment variable `CQRS_IMAGE_<NAME>`, then the lines of the images command
//! (`CQRS_IMAGES_COMMAND`), then the upstream default. The variable names are the ones
//! `docker/images/build.sh` prints, so its output can be exported as is.

use std::collections::BTreeMap;
use std::fmt;

use futures::StreamExt;
use testcontainers::bollard::Docker;
use testcontainers::bollard::query_parameters::CreateImageOptionsBuilder;

use crate::{Service, StackError};

/// The environment variable naming a command that prints `CQRS_IMAGE_<NAME>=<image>` lines
/// (and `# note` lines). It runs once per stack start, with `CQRS_IMAGES_WANTED` naming the
/// services whose image no builder call or variable set, before their defaults apply: for
/// machines that build or mirror their images. In the cqrs-toolkit workspace,
/// `.cargo/config.toml` sets it to `scripts/testcontainers-images.sh`.
///
/// ```
/// assert_eq!(cqrs_testcontainers::IMAGES_COMMAND_VARIABLE, "CQRS_IMAGES_COMMAND");
/// ```
pub const IMAGES_COMMAND_VARIABLE: &str = "CQRS_IMAGES_COMMAND";

/// The label `docker/images/build.sh` puts on the images it builds (value: the service).
const LOCAL_IMAGE_LABEL: &str = "org.cqrs-toolkit.image";

/// Where an image reference came from.
///
/// ```
/// use cqrs_testcontainers::ImageOrigin;
/// let origin = ImageOrigin::Environment("CQRS_IMAGE_KAFKA".into());
/// assert_eq!(origin.to_string(), "from $CQRS_IMAGE_KAFKA");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImageOrigin {
    /// The upstream default ([`Service::default_image`]).
    Default,
    /// The environment variable of that name.
    Environment(String),
    /// The images command (`CQRS_IMAGES_COMMAND`), with the note it printed, if any.
    Command(String),
    /// A [`StackBuilder::image`](crate::StackBuilder::image) call.
    Builder,
}

impl fmt::Display for ImageOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageOrigin::Default => f.write_str("default"),
            ImageOrigin::Environment(var) => write!(f, "from ${var}"),
            ImageOrigin::Command(_) => write!(f, "from ${IMAGES_COMMAND_VARIABLE}"),
            ImageOrigin::Builder => f.write_str("set by the builder"),
        }
    }
}

/// What kind of image a service runs: the upstream one, or the local build of
/// `docker/images/build.sh` (another component with the same role, started differently;
/// see `docker/README.md` of the cqrs-toolkit repository).
///
/// ```no_run
/// # fn demo(stack: &cqrs_testcontainers::CqrsStack) {
/// use cqrs_testcontainers::Flavor;
/// let local = stack.images().iter().any(|i| i.flavor == Flavor::Local);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Flavor {
    /// The upstream image or one that behaves like it (a mirror, another tag).
    Upstream,
    /// A local build of `docker/images/build.sh` (label `org.cqrs-toolkit.image`).
    Local,
}

/// The image a service runs, once resolved and found on the engine.
///
/// ```
/// use cqrs_testcontainers::{Flavor, ImageOrigin, ResolvedImage, Service};
///
/// let image = ResolvedImage {
///     service: Service::Kafka,
///     reference: "apache/kafka:4.3.1".into(),
///     origin: ImageOrigin::Default,
///     flavor: Flavor::Upstream,
/// };
/// assert_eq!(image.to_string(), "kafka=apache/kafka:4.3.1 (default)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The service.
    pub service: Service,
    /// The image reference (`name:tag`).
    pub reference: String,
    /// Where the reference came from.
    pub origin: ImageOrigin,
    /// Upstream image or local build.
    pub flavor: Flavor,
}

impl fmt::Display for ResolvedImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let local = if self.flavor == Flavor::Local {
            ", local build"
        } else {
            ""
        };
        write!(
            f,
            "{}={} ({}{local})",
            self.service, self.reference, self.origin
        )
    }
}

impl ResolvedImage {
    /// Name and tag, split as the engine does (a registry port is not a tag).
    pub(crate) fn name_and_tag(&self) -> (String, String) {
        split_reference(&self.reference)
    }
}

/// `name:tag` -> (`name`, `tag`); a digest stays with the name; no tag means `latest`.
pub(crate) fn split_reference(reference: &str) -> (String, String) {
    if reference.contains('@') {
        return (reference.to_owned(), String::new());
    }
    let slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[slash..].rfind(':') {
        Some(i) => (
            reference[..slash + i].to_owned(),
            reference[slash + i + 1..].to_owned(),
        ),
        None => (reference.to_owned(), "latest".to_owned()),
    }
}

/// The references asked for, before they are checked on the engine.
pub(crate) async fn resolve(
    wanted: &[Service],
    builder: &BTreeMap<Service, String>,
) -> Result<Vec<(Service, String, ImageOrigin)>, StackError> {
    let env = |s: Service| {
        std::env::var(s.image_variable())
            .ok()
            .filter(|v| !v.trim().is_empty())
    };
    let undecided: Vec<Service> = wanted
        .iter()
        .copied()
        .filter(|s| !builder.contains_key(s) && env(*s).is_none())
        .collect();
    let from_command = match std::env::var(IMAGES_COMMAND_VARIABLE) {
        Ok(command) if !command.trim().is_empty() && !undecided.is_empty() => {
            run_images_command(&command, &undecided).await?
        }
        _ => CommandOutput::default(),
    };
    Ok(wanted
        .iter()
        .map(|&s| {
            if let Some(r) = builder.get(&s) {
                (s, r.clone(), ImageOrigin::Builder)
            } else if let Some(r) = env(s) {
                (
                    s,
                    r,
                    ImageOrigin::Environment(s.image_variable().to_owned()),
                )
            } else if let Some(r) = from_command.images.get(s.image_variable()) {
                (
                    s,
                    r.clone(),
                    ImageOrigin::Command(from_command.note.clone()),
                )
            } else {
                (s, s.default_image().to_owned(), ImageOrigin::Default)
            }
        })
        .collect())
}

#[derive(Default)]
struct CommandOutput {
    images: BTreeMap<String, String>,
    note: String,
}

/// Runs the images command with `CQRS_IMAGES_WANTED` naming the services (build.sh names).
/// Its `CQRS_IMAGE_*=...` lines are images; `# ...` lines are a note shown with them.
async fn run_images_command(
    command: &str,
    wanted: &[Service],
) -> Result<CommandOutput, StackError> {
    let names: Vec<&str> = wanted.iter().map(|s| s.local_image_name()).collect();
    let fail = |message: String| StackError::ImagesCommand {
        command: command.to_owned(),
        message,
    };
    let output = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("CQRS_IMAGES_WANTED", names.join(" "))
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| fail(format!("cannot run it: {e}")))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(fail(format!("{}\n{}", output.status, tail(&stderr, 30))));
    }
    let mut parsed = CommandOutput::default();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let line = line.trim();
        if let Some(note) = line.strip_prefix('#') {
            parsed.note = note.trim().to_owned();
        } else if let Some((key, value)) = line.split_once('=') {
            let value = value.trim();
            if key.starts_with("CQRS_IMAGE_") && !value.is_empty() {
                parsed.images.insert(key.to_owned(), value.to_owned());
            }
        }
    }
    Ok(parsed)
}

/// Finds the image on the engine (pulling it when missing) and tells its flavor.
pub(crate) async fn check(
    docker: &Docker,
    service: Service,
    reference: String,
    origin: ImageOrigin,
) -> Result<ResolvedImage, StackError> {
    let inspected = match docker.inspect_image(&reference).await {
        Ok(image) => image,
        Err(first) => {
            pull(docker, &reference)
                .await
                .map_err(|message| StackError::ImageMissing {
                    service,
                    image: reference.clone(),
                    origin: origin.to_string(),
                    message: format!("{first}; pull: {message}"),
                    hint: service.missing_hint(),
                })?;
            docker
                .inspect_image(&reference)
                .await
                .map_err(|e| StackError::docker(format!("inspect image {reference}"), e))?
        }
    };
    let label = inspected
        .config
        .and_then(|c| c.labels)
        .and_then(|labels| labels.get(LOCAL_IMAGE_LABEL).cloned());
    let flavor = if label.as_deref() == Some(service.local_image_name()) {
        Flavor::Local
    } else {
        Flavor::Upstream
    };
    Ok(ResolvedImage {
        service,
        reference,
        origin,
        flavor,
    })
}

async fn pull(docker: &Docker, reference: &str) -> Result<(), String> {
    let (name, tag) = split_reference(reference);
    let mut options = CreateImageOptionsBuilder::new().from_image(&name);
    if !tag.is_empty() {
        options = options.tag(&tag);
    }
    let mut progress = docker.create_image(Some(options.build()), None, None);
    while let Some(step) = progress.next().await {
        step.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The last `n` lines of `text`.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::split_reference;

    #[test]
    fn references_split_like_the_engine_does() {
        let s = |r: &str| split_reference(r);
        assert_eq!(s("postgres:17.6"), ("postgres".into(), "17.6".into()));
        assert_eq!(s("mongo"), ("mongo".into(), "latest".into()));
        assert_eq!(
            s("localhost:5000/cqrs/kafka"),
            ("localhost:5000/cqrs/kafka".into(), "latest".into())
        );
        assert_eq!(
            s("localhost:5000/kafka:4.3"),
            ("localhost:5000/kafka".into(), "4.3".into())
        );
        assert_eq!(s("a/b@sha256:ff"), ("a/b@sha256:ff".into(), String::new()));
    }
}
