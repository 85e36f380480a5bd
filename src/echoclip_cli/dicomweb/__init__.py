"""DICOMweb: a hospital archive as echoclip's input and the place its results go back to.

One seam: :class:`Archive` (what to read: a server and studies or a query) and
:func:`echoclip_cli.dicomweb.staging.stage` (an archive's instances as local files holding only
the frames a run samples). :mod:`.server` speaks QIDO-RS, WADO-RS and STOW-RS.
"""

from .archive import Archive
from .server import Server, ServerError, public_url

__all__ = ["Archive", "Server", "ServerError", "public_url"]
