"""Where images come from, one module per source: ``registry`` (docker://, oras://),
``library`` (library://), ``local`` (SIF files). A source finds out which image a name
means and how to fetch it; :mod:`sycri.images.intake` does what every pull shares."""
