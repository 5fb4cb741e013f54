"""geoseg for QGIS: geoseg's commands as Processing algorithms, run out of process."""


def classFactory(iface):
    from .plugin import GeosegPlugin

    return GeosegPlugin(iface)
