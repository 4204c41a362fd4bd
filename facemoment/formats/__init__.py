"""File formats and codecs: the visualbase wire, recordings, frame decoding, media, the sample."""
