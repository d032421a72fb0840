#!/bin/sh
# Regenerates DejaVuSans-kiln.ttf, the font Kiln's PNG plots draw their text with
# (kiln_core::plot::font), from Debian's fonts-dejavu-core (DejaVu Sans 2.37):
# Latin (with its extensions, so French, German, Vietnamese...), Greek, Cyrillic,
# punctuation, arrows, math signs and the block elements (U+2581 is SentencePiece's
# word mark), without hinting (ab_glyph does not use it). Needs `pip install fonttools`.
# Licence: Bitstream Vera (LICENSE.txt beside this script); the name holds neither
# "Bitstream" nor "Vera", as that licence asks of modified copies.
set -eu
here=$(dirname "$0")
pyftsubset /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf \
  --unicodes="U+0020-007E,U+00A0-024F,U+0259,U+02B0-02FF,U+0300-036F,U+0370-03FF,U+0400-04FF,U+1E00-1EFF,U+2000-206F,U+20A0-20BF,U+2100-214F,U+2190-21FF,U+2200-22FF,U+2580-259F,U+25A0-25FF,U+FFFD" \
  --no-hinting --desubroutinize --layout-features='kern,liga' \
  --output-file="$here/DejaVuSans-kiln.ttf"
