"""Text to AST: the lark-generated LALR tables, a fast table-driven parser, and the AST builder."""
