"""The site profiles a classifier serves beside its bundle (``hemascope site adapt``). No gRPC here.

Profiles are the ``*.npz`` files of the directory in the ``site_profiles`` setting, read when the bundle is
(re)loaded and checked against it then: a profile that does not load, or was made for another bundle, is
kept out and remembered with its reason, so a call naming it fails with FAILED_PRECONDITION and the reason
while every other profile and the bundle keep serving. A name no file has is NOT_FOUND.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hemascope.bundle import BundleError, Manifest
from hemascope.errors import FailedPrecondition, NotFound, echo
from hemascope.logs import get_logger
from hemascope.site.profile import NAME_PATTERN, SUFFIX, ProfileError, SiteProfile, check_name

log = get_logger(__name__)


@dataclass(frozen=True)
class ProfileSet:
    profiles: Mapping[str, SiteProfile] = field(default_factory=dict)
    #: name -> (reason code, message) of the profiles that were refused at load
    refused: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return sorted(self.profiles)

    def get(self, name: str) -> SiteProfile | None:
        """The profile called ``name``; ``None`` for ``""`` (no profile)."""
        if not name:
            return None
        check_name(name)
        profile = self.profiles.get(name)
        if profile is not None:
            return profile
        if name in self.refused:
            reason, message = self.refused[name]
            raise FailedPrecondition(message, reason=reason, field="site_profile")
        raise NotFound(
            f"no site profile {echo(name)}; this service has {self.names or 'none'}",
            reason="UNKNOWN_SITE_PROFILE",
            field="site_profile",
        )


def load_profiles(directory: Path | None, manifest: Manifest) -> ProfileSet:
    """Every profile of ``directory`` that applies to ``manifest``; :class:`BundleError` when the directory
    is configured but missing (the bundle is not served without the profiles it was configured with)."""
    if directory is None:
        return ProfileSet()
    if not directory.is_dir():
        raise BundleError(f"the site-profile directory {directory} does not exist or is not a directory")
    profiles: dict[str, SiteProfile] = {}
    refused: dict[str, tuple[str, str]] = {}
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        name = path.name.removesuffix(SUFFIX)
        if not NAME_PATTERN.match(name) or not path.is_file():
            continue
        try:
            profile = SiteProfile.load(path)
            profile.check_bundle(manifest, name)
        except (ProfileError, FailedPrecondition) as exc:
            refused[name] = (exc.reason, exc.message)
            log.warning("site_profile_refused", profile=name, reason=exc.reason, error=exc.message)
            continue
        profiles[name] = profile
    log.info("site_profiles_loaded", profiles=sorted(profiles), refused=sorted(refused))
    return ProfileSet(profiles, refused)
