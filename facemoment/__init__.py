"""FaceMoment: highlight moments from camera streams of people, on Bytewax."""

__version__ = "0.1.0"
