"""A loaded program checked: files and imports, the symbol table, the checks and match reasoning."""
