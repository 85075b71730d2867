"""Generated loss modules, one folder per backend. DO NOT EDIT; run `make generate`."""
