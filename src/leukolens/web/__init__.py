"""``leukolens serve``: the archive and the analysis behind a small JSON API and one page (docs/web.md).

    >>> from leukolens.web import ServeConfig
    >>> from leukolens.web.app import create_app      # needs the web extra: pip install -e ".[web]"
    >>> app = create_app(ServeConfig(data_dir="data"))

FastAPI is imported only by :mod:`leukolens.web.app`, so ``leukolens`` works without the web extra.
"""

from leukolens.web.config import ServeConfig

__all__ = ["ServeConfig"]
