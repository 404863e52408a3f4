#!/usr/bin/env python3
"""Writes the hand-made seed corpora of the fuzz targets into fuzz/corpus/TARGET.

Run it from anywhere (`python3 fuzz/make-seeds.py`); it rewrites the seeds it makes and leaves
other files alone. The seeds are small on purpose: the fuzzer grows its own corpus in
fuzz/target/corpus/, which is not committed.
"""
import base64
import gzip
import io
import os
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CORPUS = os.path.join(HERE, "corpus")


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------------------------------------
# pkt_lines: what `git push` sends before the pack.

def pkt(s):
    if isinstance(s, str):
        s = s.encode()
    return b"%04x" % (len(s) + 4) + s


FLUSH = b"0000"
ZERO = "0" * 40
A = "1" * 40
B = "2" * 40
CAPS = "report-status side-band-64k quiet atomic ofs-delta push-options object-format=sha1 agent=git/2.43.0"

write("pkt_lines", "create-main", pkt(f"{ZERO} {A} refs/heads/main\0{CAPS}\n") + FLUSH + b"PACK")
write("pkt_lines", "update-with-options",
      pkt(f"{A} {B} refs/heads/main\0 report-status push-options\n") + FLUSH
      + pkt("ci.skip\n") + pkt("deploy=canary\n") + FLUSH)
write("pkt_lines", "delete-and-tags",
      pkt(f"{A} {ZERO} refs/heads/old\0report-status delete-refs side-band\n")
      + pkt(f"{ZERO} {B} refs/tags/v1\n") + pkt(f"{ZERO} {A} refs/tags/v2\n") + FLUSH)
write("pkt_lines", "too-many-refs",
      pkt(f"{ZERO} {A} refs/heads/b0\0report-status\n")
      + b"".join(pkt(f"{ZERO} {A} refs/heads/b{i}\n") for i in range(1, 12)) + FLUSH)
write("pkt_lines", "too-many-options",
      pkt(f"{ZERO} {A} refs/heads/main\0push-options\n") + FLUSH
      + b"".join(pkt(f"o{i}=" + "x" * 30 + "\n") for i in range(8)) + FLUSH)
write("pkt_lines", "shallow", pkt(f"shallow {A}\n") + FLUSH)
write("pkt_lines", "sha256", pkt(f"{ZERO} {A} refs/heads/main\0object-format=sha256\n") + FLUSH)
write("pkt_lines", "unknown-cap", pkt(f"{ZERO} {A} refs/heads/main\0no-such-cap\n") + FLUSH)
write("pkt_lines", "truncated", pkt(f"{ZERO} {A} refs/heads/main\n")[:30])
write("pkt_lines", "empty", b"")
write("pkt_lines", "delim-packet", b"0001" + FLUSH)

# ---------------------------------------------------------------------------------------------
# http_auth: Authorization header values.

def b64(s):
    return base64.b64encode(s.encode()).decode()

for name, value in {
    "basic": "Basic " + b64("alice:" + "ab" * 32),
    "basic-lower": "basic " + b64("git:token"),
    "basic-empty-user": "Basic " + b64(":token"),
    "basic-no-colon": "Basic " + b64("token"),
    "basic-bad-b64": "Basic !!!=",
    "bearer": "Bearer " + "cd" * 32,
    "bearer-tab": "BEARER\t  token  ",
    "bearer-empty": "Bearer",
    "digest": 'Digest username="a", realm="hephy"',
    "two-tokens": "Bearer a b",
}.items():
    write("http_auth", name, value)

# ---------------------------------------------------------------------------------------------
# hephy_toml: the repository's examples and the README's.

with open(os.path.join(REPO, "examples/sample-app/hephy.toml")) as f:
    write("hephy_toml", "sample-app", f.read())
with open(os.path.join(REPO, "README.md")) as f:
    readme = f.read()
for i, block in enumerate(readme.split("```toml\n")[1:]):
    write("hephy_toml", f"readme-{i}", block.split("```")[0])
write("hephy_toml", "backends", """[build]
backend = "dockerfile"
timeout = "10m"
env = { A = "1" }

[build.dockerfile]
file = "docker/Dockerfile"
context = "."
target = "prod"
args = { VERSION = "1.2" }

[build.files]
dir = "public"

[deploy]
port = 3000
strategy = "canary"
resources = { memory = "1G", cpus = 2 }
egress = "none"
""")
write("hephy_toml", "bad-types", '[build]\nbackend = 3\n[deploy]\nport = "x"\nreplicas = -1\n')

# ---------------------------------------------------------------------------------------------
# dockerfile

write("dockerfile", "multi-stage", """# syntax=docker/dockerfile:1
ARG GO=1.22
ARG BASE=gcr.io/distroless/static
FROM --platform=$BUILDPLATFORM golang:${GO} AS build
WORKDIR /src
COPY --link . .
RUN --mount=type=cache,target=/root/.cache \\
    --mount=type=bind,from=tools,target=/t \\
    go build -o /app ./cmd/server
FROM ${BASE:-scratch}
COPY --from=build /app /app
ENTRYPOINT ["/app"]
""")
write("dockerfile", "heredoc", """FROM debian:12 AS tools
RUN <<EOF
apt-get update
apt-get install -y curl
EOF
COPY <<-"CONF" /etc/app.conf
\tkey=value
\tCONF
FROM tools
RUN echo done
""")
write("dockerfile", "escape", """# escape=`
FROM mcr.microsoft.com/windows/servercore AS base
RUN dir `
    c:\\
FROM base AS final
FROM 0
""")
write("dockerfile", "platform-fixed", "FROM --platform=linux/arm64 alpine AS a\nRUN true\nFROM a\nRUN true\n")
write("dockerfile", "no-from", "RUN true\n")
write("dockerfile", "oci-base", "ARG L=oci:layout:tag\nFROM $L\nFROM containers-storage:x\n")

# ---------------------------------------------------------------------------------------------
# go_constraints: first line the file name, then the source.

for name, text in {
    "cgo-linux": "native_linux.go\n//go:build cgo && linux\n\npackage native\n\nimport (\n\t\"fmt\"\n\t\"C\"\n)\n",
    "not-cgo": "pure.go\n//go:build !cgo || (linux && amd64)\n\npackage main\n\nimport \"C\"\n",
    "windows": "x_windows_amd64.go\n//go:build windows\npackage x\nimport \"C\"\n",
    "nested": "n.go\n//go:build !(!(linux || darwin) && !(go1.21 && !purego))\n\npackage n\n",
    "comment-import": "c.go\n// Copyright\n\n/* import \"C\" */\npackage c\nimport (\n\t\"os\" // \"C\"\n)\nfunc main() {}\n",
    "malformed": "m.go\n//go:build linux &&\npackage m\n",
    "deep-not": "d.go\n//go:build " + "!" * 300 + "linux\npackage d\n",
}.items():
    write("go_constraints", name, text)
with open(os.path.join(REPO, "examples/sample-app/main.go")) as f:
    write("go_constraints", "sample-app", "main.go\n" + f.read()[:2000])

# ---------------------------------------------------------------------------------------------
# unpack: raw layers, each after a 0 byte (see fuzz_targets/unpack.rs).

def layer(entries, gz=False):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for kind, name, extra in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            data = b""
            if kind == "file":
                data = extra or b"x"
                info.size = len(data)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = extra
            elif kind == "link":
                info.type = tarfile.LNKTYPE
                info.linkname = extra
            elif kind == "setuid":
                info.mode = 0o4755
                data = b"#!"
                info.size = 2
            t.addfile(info, io.BytesIO(data))
    # Without tarfile's padding to 10 KB: the end-of-archive blocks are enough.
    raw = buf.getvalue().rstrip(b"\0")
    raw += b"\0" * (-len(raw) % 512 + 1024)
    if gz:
        raw = gzip.compress(raw, mtime=0)
    return b"\0" + raw

write("unpack", "plain", layer([("dir", "app", None), ("file", "app/main", b"bin"), ("symlink", "app/run", "main")]))
write("unpack", "whiteouts", layer([("file", "etc/.wh.passwd", None), ("file", "etc/app/.wh..wh..opq", None),
                                    ("file", "etc/app/new", b"n"), ("file", ".wh..wh.plnk", None)]))
write("unpack", "whiteout-dots", layer([("file", "etc/.wh...", None), ("file", "bin/.wh..", None)]))
write("unpack", "escapes", layer([("file", "../outside/evil", b"e"), ("file", "up/evil", b"e"),
                                  ("file", "abs/evil", b"e"), ("link", "hl", "../outside/secret"),
                                  ("symlink", "new", "/"), ("file", "new/evil", b"e")]))
write("unpack", "replace", layer([("file", "bin", b"now a file"), ("dir", "etc/passwd", None),
                                  ("setuid", "bin2/su", None), ("link", "etc/hl", "etc/app/conf")], gz=True))
