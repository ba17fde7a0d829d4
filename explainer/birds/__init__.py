"""The birds world: the CUB-200-2011 reader (classes, attributes, splits) and the species' English names."""
