"""systemd EnvironmentFile= parsing for deploy/check.sh's Python helpers."""

from pathlib import Path


def parse_env_file(path: Path) -> dict[str, str]:
    """KEY="value" lines as the role templates write them (\\ " ` $ escaped
    inside double quotes, as systemd reads them); comments and blank lines are
    skipped."""
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, _, value = line.partition("=")
        if len(value) >= 2 and value[0] == value[-1] == '"':
            out, chars = [], iter(value[1:-1])
            for c in chars:
                out.append(next(chars, "") if c == "\\" else c)
            value = "".join(out)
        env[key.strip()] = value
    return env
