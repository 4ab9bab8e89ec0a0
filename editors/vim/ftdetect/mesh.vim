" meshc policy files (Vim; Neovim users can use vim.filetype.add instead, see docs/editors.md)
autocmd BufRead,BufNewFile *.mesh setfiletype mesh
