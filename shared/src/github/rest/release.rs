//! The actions/runner release runners install, and its checksums.

use super::*;

/// An actions/runner release: its version and the SHA-256 of those of its tarballs pacer learnt,
/// lower-case hex by file name.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RunnerRelease {
    pub(super) version: String,
    pub(super) sha256: BTreeMap<String, String>,
}

/// Where the release runners install comes from: `runner.version` and `runner.sha256`.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum ReleaseSource {
    /// The newest release, asked for at `releases/latest`.
    Latest,
    /// A pinned version, asked for by its tag.
    Tag(String),
    /// A pinned version with the operator's checksums: GitHub is not asked.
    Configured(RunnerRelease),
}

impl ReleaseSource {
    pub(super) fn from_config(runner: &RunnerConfig) -> Self {
        let version = match runner.version.trim() {
            "" | "latest" => return ReleaseSource::Latest,
            pin => pin.trim_start_matches('v').to_owned(),
        };
        let sha256: BTreeMap<String, String> = runner
            .sha256
            .given()
            .filter_map(|(_, os, arch, value)| {
                Some((runner_tarball(&version, os, arch), sha256_hex(value)?))
            })
            .collect();
        if sha256.is_empty() {
            ReleaseSource::Tag(version)
        } else {
            ReleaseSource::Configured(RunnerRelease { version, sha256 })
        }
    }
}

impl RestGitHub {
    /// The release runners install: the operator's (no call), or GitHub's, cached — an hour
    /// for the newest, for good for a pin.
    pub(super) async fn runner_release(&self) -> GitHubResult<RunnerRelease> {
        let (call, pinned) = match &self.release_source {
            ReleaseSource::Configured(release) => return Ok(release.clone()),
            ReleaseSource::Latest => (
                Call::new(
                    &LATEST_RELEASE,
                    Method::GET,
                    ["repos", "actions", "runner", "releases", "latest"].map(String::from),
                ),
                None,
            ),
            ReleaseSource::Tag(version) => (
                Call::new(
                    &RELEASE_BY_TAG,
                    Method::GET,
                    ["repos", "actions", "runner", "releases", "tags"]
                        .map(String::from)
                        .into_iter()
                        .chain([format!("v{version}")]),
                ),
                Some(version),
            ),
        };
        // Held across the fetch: callers arriving meanwhile wait for its answer.
        let mut cached = self.release.lock().await;
        let now = self.clock.now();
        if let Some((release, fetched_at)) = cached.as_ref() {
            if pinned.is_some() || now - *fetched_at < RELEASE_CACHE_TTL {
                return Ok(release.clone());
            }
        }
        let fetched = match self.call(&call).await {
            Ok(reply) => reply
                .json::<WireRelease>(&call)
                .and_then(WireRelease::into_release),
            Err(e) => Err(e),
        };
        let fetched = fetched.and_then(|release| match pinned {
            Some(pin) if *pin != release.version => Err(GitHubError::Other(anyhow::anyhow!(
                "{}: GitHub answered release {} for the pinned runner.version {pin}",
                call.describe(),
                release.version
            ))),
            _ => Ok(release),
        });
        match (fetched, cached.as_ref()) {
            (Ok(release), _) => {
                tracing::info!(version = %release.version, checksums = release.sha256.len(), "actions/runner release");
                *cached = Some((release.clone(), now));
                Ok(release)
            }
            // A stale answer beats no runner: keep serving it while GitHub is unreachable.
            (Err(e), Some((stale, _))) if e.is_transient() => {
                tracing::warn!(error = %crate::error_text::display_chain(&e), version = %stale.version, "cannot refresh the latest actions/runner release; using the cached one");
                Ok(stale.clone())
            }
            (Err(e), _) => Err(e),
        }
    }
}

impl RestGitHub {
    #[tracing::instrument(skip(self))]
    pub(super) async fn runner_download(
        &self,
        os: &str,
        arch: &str,
    ) -> GitHubResult<RunnerDownload> {
        let release = self.runner_release().await?;
        let file = runner_tarball(&release.version, os, arch);
        if let Some(sha256) = release.sha256.get(&file) {
            return Ok(RunnerDownload::new(
                &release.version,
                os,
                arch,
                Some(sha256.clone()),
            ));
        }
        let key = RunnerSha256::key_for(os, arch);
        let (why, fix) = match (&self.release_source, key) {
            (ReleaseSource::Configured(_), Some(key)) => {
                ("runner.sha256 gives none".to_owned(), format!("set {key}"))
            }
            (ReleaseSource::Configured(_), None) => (
                "runner.sha256 gives none".to_owned(),
                "runner.sha256 holds Linux x64 and arm64 checksums only".to_owned(),
            ),
            (_, key) => (
                format!(
                    "actions/runner v{} publishes none (no digest on such an asset, none between the SHA markers of its release notes)",
                    release.version
                ),
                match key {
                    Some(key) => format!("pin runner.version and set {key}"),
                    None => "use a platform the release publishes a checksum for".to_owned(),
                },
            ),
        };
        Err(GitHubError::Other(anyhow::anyhow!(
            "no SHA-256 is known for {file}: {why}; pacer hands out no download a runner cannot verify ({fix})"
        )))
    }
}

/// `v2.321.0` → `2.321.0`, refusing anything that is not a dotted number.
pub(super) fn parse_release_tag(tag: &str) -> GitHubResult<String> {
    let version = tag.trim().trim_start_matches('v');
    let well_formed = !version.is_empty()
        && version
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !well_formed {
        return Err(GitHubError::Other(anyhow::anyhow!(
            "the actions/runner release has an unexpected tag {tag:?}"
        )));
    }
    Ok(version.to_owned())
}

/// An actions/runner release as the REST API returns it.
#[derive(Deserialize)]
pub(super) struct WireRelease {
    pub(super) tag_name: String,
    #[serde(default)]
    pub(super) body: Option<String>,
    #[serde(default)]
    pub(super) assets: Vec<WireAsset>,
}

#[derive(Deserialize)]
pub(super) struct WireAsset {
    pub(super) name: String,
    /// `sha256:<hex>`, computed by GitHub at upload; `null` for assets uploaded before it did.
    #[serde(default)]
    pub(super) digest: Option<String>,
}

impl WireRelease {
    /// The release with the checksum of each tarball: GitHub's digest of the asset, else the one
    /// actions/runner writes into the release notes (older releases have only those).
    pub(super) fn into_release(self) -> GitHubResult<RunnerRelease> {
        let version = parse_release_tag(&self.tag_name)?;
        let mut sha256 = BTreeMap::new();
        for asset in self.assets {
            let digest = asset
                .digest
                .as_deref()
                .and_then(|d| d.strip_prefix("sha256:"));
            if let Some(hex) = digest.and_then(sha256_hex) {
                sha256.insert(asset.name, hex);
            }
        }
        for (platform, hex) in notes_checksums(self.body.as_deref().unwrap_or_default()) {
            // Windows packages are zips, which pacer never names.
            if !platform.starts_with("win-") {
                let (os, arch) = platform.split_once('-').unwrap_or((platform, ""));
                sha256
                    .entry(runner_tarball(&version, os, arch))
                    .or_insert(hex);
            }
        }
        Ok(RunnerRelease { version, sha256 })
    }
}

/// The checksums in actions/runner's release notes, one per platform:
/// `<!-- BEGIN SHA linux-x64 -->`hex`<!-- END SHA linux-x64 -->`.
pub(super) fn notes_checksums(notes: &str) -> impl Iterator<Item = (&str, String)> {
    notes.split("<!-- BEGIN SHA ").skip(1).filter_map(|part| {
        let (platform, rest) = part.split_once(" -->")?;
        let (hex, rest) = rest.split_once("<!-- END SHA ")?;
        if rest.split_once(" -->")?.0 != platform {
            return None;
        }
        Some((platform, sha256_hex(hex.trim())?))
    })
}
