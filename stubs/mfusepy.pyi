# The part of mfusepy (3.1, untyped) that leased.torture.faultfs uses: the FUSE
# loop's constructor, which mounts and serves until unmounted.  Options are
# libfuse mount options (flags as bools, numbers, strings).

class FUSE:
    def __init__(
        self,
        operations: object,
        mountpoint: str,
        raw_fi: bool = False,
        encoding: str = "utf-8",
        errors: str = "surrogateescape",
        **kwargs: bool | int | str,
    ) -> None: ...
