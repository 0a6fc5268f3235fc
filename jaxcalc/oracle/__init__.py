"""The reference oracle: golden vectors out (`jaxcalc export`), implementations checked (`jaxcalc verify`).

* :mod:`~jaxcalc.oracle.arrays`    the JSON array and npz formats, read strictly
* :mod:`~jaxcalc.oracle.golden`    the golden set on disk, read back with every checksum checked
* :mod:`~jaxcalc.oracle.reference` float64 reference outputs of a case and its measured float32 tolerance
* :mod:`~jaxcalc.oracle.export`    writing a golden set atomically and deterministically
* :mod:`~jaxcalc.oracle.protocol`  the JSON Lines conversation with an implementation in a subprocess
* :mod:`~jaxcalc.oracle.verify`    comparing an implementation's values and VJPs with the golden set
"""
