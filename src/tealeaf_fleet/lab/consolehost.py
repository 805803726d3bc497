"""How powershell.exe's console host treats redirected stdin, for the lab's runner.

A command can read stdin through two channels, and the host decides which one gets it:
- `$input`: the console host itself reads redirected stdin line by line (TextReader.ReadLine:
  CR, LF or CRLF end a line; a final line end adds no empty line) and feeds each line to the
  command as pipeline input (PowerShell/PowerShell `ConsoleHost.cs` and `Executor.cs`:
  `ExecuteCommandAsyncHelper` starts the pipeline, then writes each `ReadLine()` to its input).
- `[Console]::In`: the command reads the stream itself, decoded with the console's input code
  page (65001 in our shells).

PowerShell 3.0 and later read stdin into `$input` only when the command text mentions `$input`
(`AstSearcher.IsUsingDollarInput` on the parsed `-Command`/`-EncodedCommand` text); otherwise
the stream is left to `[Console]::In`. PowerShell 2.0 has no such AST test. The old advice
"PowerShell 2.0 waits for stdin to close unless -InputFormat None" suggests it reads redirected
stdin into `$input` for every command; nobody public has shown otherwise, so the lab takes that
pessimistic reading: on 2.0 the host consumes stdin whatever the command says, and
`[Console]::In` finds nothing left. A command must read `$input` to work under both readings.
"""

from __future__ import annotations

import re

DOLLAR_INPUT = "$input"
CONSOLE_IN = "[Console]::In"

# A variable reference to `input` in any case, `$input` or `${input}`: what the v3 AST test
# finds (a `$inputs` or `$input_x` variable is another variable).
_USES_DOLLAR_INPUT = re.compile(r"\$(?:input\b(?![\w:])|\{input\})", re.IGNORECASE)
_LINE_END = re.compile(r"\r\n|\r|\n")


def _major(ps_version: str) -> int:
    return int(ps_version.split(".", 1)[0])


def host_reads_stdin(ps_version: str, command_text: str) -> bool:
    """Whether the console host of PowerShell `ps_version` reads redirected stdin into
    `$input` for a command whose text is `command_text`."""
    if _major(ps_version) < 3:
        return True  # the pessimistic reading (module docstring)
    return bool(_USES_DOLLAR_INPUT.search(command_text))


def input_lines(stdin: bytes) -> list[str]:
    """The lines the console host feeds to `$input`: ReadLine over the UTF-8 text."""
    text = stdin.decode("utf-8", "replace")
    if not text:
        return []
    lines = _LINE_END.split(text)
    if lines[-1] == "":  # the stream ended with a line end: ReadLine returns no empty line
        lines.pop()
    return lines


def read(channel: str, *, ps_version: str, command_text: str, stdin: bytes) -> list[str]:
    """What a command that reads stdin through `channel` gets: the `$input` items (lines), or
    for `[Console]::In` one item, the whole rest of the stream (`ReadToEnd()`)."""
    fed = host_reads_stdin(ps_version, command_text)
    if channel == DOLLAR_INPUT:
        return input_lines(stdin) if fed else []
    if channel == CONSOLE_IN:
        return [""] if fed else [stdin.decode("utf-8", "replace")]
    raise ValueError(f"unknown stdin channel {channel!r}")
