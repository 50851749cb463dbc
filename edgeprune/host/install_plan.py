"""What `device setup` installs on a board, and from which index: chosen by the board's wheel tags.

64-bit boards (aarch64, x86_64) get `edgeprune[litert]`: PyPI has ai-edge-litert and numpy
wheels for them. 32-bit ARM boards (Raspberry Pi OS armhf: armv7l, armv6l — also on a 64-bit
kernel, which is why the tags decide, not `uname -m`) cannot: PyPI has no armv7 wheel of
ai-edge-litert nor of numpy. There the runtime is `tflite-runtime` (PyPI has
tflite_runtime-2.14.0-cp311-cp311-manylinux_2_34_armv7l.whl, the last release, built against
numpy 1.x) and numpy comes from piwheels, the Raspberry Pi's own index of armv7 wheels (which
Raspberry Pi OS's pip already uses), added as an extra index unless one is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PIWHEELS = "https://www.piwheels.org/simple"
ARM32 = ("armv7l", "armv6l", "armv8l")  # 32-bit ARM userlands (armv8l: armhf on a 64-bit kernel)
ARM32_RUNTIME = ["tflite-runtime==2.14.0", "numpy>=1.23,<2"]  # tflite-runtime 2.14 needs numpy 1


def is_arm32(platforms: list[str]) -> bool:
    """Whether the board's most specific wheel platform is 32-bit ARM."""
    return bool(platforms) and platforms[0].endswith(ARM32)


@dataclass
class InstallPlan:
    """The pip targets and index options of one set-up."""

    extras: list[str]  # edgeprune's extras
    requirements: list[str] = field(default_factory=list)  # beside edgeprune (the arm32 runtime)
    index_url: str | None = None
    extra_index_urls: list[str] = field(default_factory=list)

    def targets(self, wheel: str) -> list[str]:
        """`wheel` (a path) with its extras, then the other requirements: pip's arguments."""
        named = f"{wheel}[{','.join(self.extras)}]" if self.extras else wheel
        return [named, *self.requirements]

    def index_args(self) -> list[str]:
        """pip's --index-url / --extra-index-url options for this plan."""
        args = ["--index-url", self.index_url] if self.index_url else []
        for url in self.extra_index_urls:
            args += ["--extra-index-url", url]
        return args

    @property
    def runtime(self) -> str:
        return "tflite-runtime" if self.requirements else "ai-edge-litert"


def plan(
    platforms: list[str],
    fleet: bool = False,
    index_url: str | None = None,
    extra_index_url: str | None = None,
) -> InstallPlan:
    """The install for a board whose pip accepts `platforms` (most specific first): the runtime
    its platform has wheels for, the `fleet` extra when asked, and piwheels as an extra index
    for 32-bit ARM unless `extra_index_url` names another ("" for none)."""
    extras = ["fleet"] if fleet else []
    if is_arm32(platforms):
        extra = PIWHEELS if extra_index_url is None else extra_index_url
        return InstallPlan(extras, list(ARM32_RUNTIME), index_url, [extra] if extra else [])
    extra_urls = [extra_index_url] if extra_index_url else []
    return InstallPlan(["litert", *extras], [], index_url, extra_urls)
