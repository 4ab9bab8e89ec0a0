"""What serves people and editors around the compiler: lint, the language server, explanations, CI formats."""
