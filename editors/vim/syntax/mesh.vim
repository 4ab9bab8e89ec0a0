" Vim syntax file for meshc service-mesh policies (.mesh), without TextMate or tree-sitter.
" Keywords are contextual in the language; like the TextMate grammar, this highlights a keyword
" word wherever it stands, except the names right after a declaration keyword.

if exists("b:current_syntax")
  finish
endif

" names contain `-` (gateway-error, my-service)
syntax iskeyword @,48-57,_,-

syntax keyword meshImport       import
syntax keyword meshDeclaration  mesh service routes route subset authorization policy nextgroup=meshDeclName skipwhite
syntax keyword meshKeyword      trust_domain mtls certificates cluster_domain port namespace identity endpoints hosts labels limits outlier retry_budget
syntax keyword meshKeyword      tracing sampling propagation otlp
syntax keyword meshKeyword      connections pending requests retries consecutive_5xx consecutive_gateway_errors
syntax keyword meshKeyword      interval ejection max_ejected percent min_concurrency sidecar inbound outbound
syntax keyword meshKeyword      admin ports app escaped_slashes match path header query method caller to split by timeout
syntax keyword meshKeyword      retry attempts on per_try_timeout backoff max allow_non_idempotent fault abort
syntax keyword meshKeyword      delay mirror request_headers response_headers set add remove default use
syntax keyword meshKeyword      max_request_headers max_request_headers_kb request_headers_timeout idle_timeout
syntax keyword meshKeyword      stream_idle_timeout max_connections
syntax keyword meshKeyword      redirect rewrite respond scheme host strip_query
" CORS (language §13a)
syntax keyword meshKeyword      cors origins methods headers expose max_age credentials
" policy tests (`meshc test`); `test "NAME"` names nothing a reference uses
syntax keyword meshKeyword      test request expect status request_header response_header denied_by allowed_by
" `from service NAME` is a condition, not a declaration: the kind after `from` is tried first
syntax keyword meshKeyword      from nextgroup=meshFromKind skipwhite
syntax keyword meshFromKind     contained identity namespace service same_namespace unauthenticated any
syntax keyword meshKeyword      same_namespace rules
" asserts (docs/testing-assert.md): `assert never|always { from unauthenticated|any … }`
syntax keyword meshKeyword      assert never always unauthenticated any
syntax keyword meshMatchKind    exact prefix raw_prefix regex suffix present absent not ignore_case
syntax keyword meshAction       allow deny
syntax keyword meshMethod       GET HEAD POST PUT DELETE CONNECT OPTIONS TRACE PATCH
syntax keyword meshConstant     none

" the name after `service`, `routes`, `route`, `subset`, `authorization` (and the kind after `policy`)
syntax match meshDeclName       contained "\%(\k\+/\)\=\k\+"
" NAMESPACE/SERVICE[.SUBSET]: a service of a name several namespaces declare (language §5.1)
syntax match meshNamespaceRef   "\<[a-z0-9][-a-z0-9]*/\ze\h"

syntax match meshNumber         "\<\d\+\>"
syntax match meshDuration       "\<\d\+\%(\.\d\+\)\=\%(ms\|s\|m\|h\)\>"
syntax match meshPercent        "\<\d\+\%(\.\d\+\)\=%"
syntax match meshStdRef         "\<std\.\k\+"

syntax match meshEscape         contained +\\\%([\\"ntr]\|u\x\{4}\)+
syntax region meshString        start=+"+ skip=+\\\\\|\\"+ end=+"+ end=+$+ oneline contains=meshEscape
syntax match meshComment        "#.*$" contains=@Spell

highlight default link meshImport      Include
highlight default link meshDeclaration Structure
highlight default link meshDeclName    Identifier
highlight default link meshKeyword     Keyword
highlight default link meshFromKind    Keyword
highlight default link meshMatchKind   Operator
highlight default link meshAction      Conditional
highlight default link meshMethod      Constant
highlight default link meshConstant    Constant
highlight default link meshNumber      Number
highlight default link meshDuration    Number
highlight default link meshPercent     Number
highlight default link meshStdRef      Function
highlight default link meshEscape      SpecialChar
highlight default link meshString      String
highlight default link meshComment     Comment
highlight default link meshNamespaceRef Identifier

let b:current_syntax = "mesh"
