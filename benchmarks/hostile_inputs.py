"""Hostile and careless inputs, tried as a user would: each command run in a fresh
process with arguments and files a careless or hostile user could give. An input is
answered well when the command refuses it in exactly one ``error:`` line with status 2
and nothing on stdout, or accepts it (status 0) and leaves every file of the user's as it
was; anything else (a traceback, another status, a user's file changed) is counted and
printed.

Usage:
    python benchmarks/hostile_inputs.py [--only train] [--keep DIR]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SONG = "cause baby now we got bad blood\nyou know it used to be mad love\n" * 40
TINY = ["--set", "train.epochs=1", "--set", "train.sample_length=0", "--set", "train.tensorboard=false",
        "--set", "model.units=8", "--set", "model.embedding_dim=8", "--set", 'train.precision="float32"']
DEEP = "a = " + "[" * 5000 + "]" * 5000 + "\n"
BAD_NUMBERS = ["-1", "0", "nan", "inf", "-inf", "1e400", "99999999999999999999", "3.5", "ten", ""]
BAD_PATHS = ["missing.txt", "", " ", "a\nb", "/dev/null", "fifo", "folder", "/", "unreadable.txt", "binary.bin",
             "latin1.txt", "empty.txt", "../../../../etc/passwd", "link_to_nowhere"]


def world(folder: Path) -> dict:
    """Writes the files the cases use; returns the user's files (path: bytes) to watch."""
    (folder / "song.txt").write_text(SONG)
    (folder / "empty.txt").write_bytes(b"")
    (folder / "binary.bin").write_bytes(b"ab\x00cd" * 10)
    (folder / "latin1.txt").write_bytes("café\n".encode("latin-1"))
    (folder / "short.txt").write_text("too short\n")
    (folder / "folder").mkdir()
    (folder / "folder" / "notes.md").write_text("no .txt here")
    os.mkfifo(folder / "fifo")
    os.symlink(folder / "nowhere", folder / "link_to_nowhere")
    (folder / "unreadable.txt").write_text(SONG)
    (folder / "deep.toml").write_text(DEEP)
    (folder / "badtoml.toml").write_text("[model\nunits = 3\n")
    (folder / "search.toml").write_text("model.units = [8, 16]\n")
    (folder / "mine").mkdir()
    (folder / "mine" / "thesis.docx").write_bytes(b"my thesis")
    (folder / "mine" / "sub").mkdir()
    (folder / "mine" / "sub" / "notes.txt").write_bytes(b"my notes")
    (folder / "mine_saved").mkdir()
    for name in ("saved_model.pb", "mydata.csv", "variables/notes.txt"):
        (folder / "mine_saved" / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / "mine_saved" / name).write_bytes(b"mine " + name.encode())
    (folder / "mine_work" / "work").mkdir(parents=True)
    (folder / "mine_work" / "work" / "chapter1.md").write_bytes(b"chapter one")
    (folder / "mine_work" / "vocabulary.txt").write_bytes(b"my words")
    (folder / "a_file").write_bytes(b"a file of mine")
    return {path: path.read_bytes() for path in folder.rglob("*") if path.is_file() and not path.is_symlink()
            and path.name not in ("fifo",)}


def trained(folder: Path) -> None:
    """A tiny trained run, a prepared corpus and damaged copies of each."""
    run = [sys.executable, "-m", "keras_rnnlm.train", "--corpus", "song.txt", "--output-dir", "runs", "--run-name", "good", *TINY]
    subprocess.run(run, cwd=folder, check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "keras_rnnlm.prepare", "--corpus", "song.txt", "--out", "prepared"],
                   cwd=folder, check=True, capture_output=True)
    damages = {
        "truncated_model": ("model.keras", lambda path: path.write_bytes(path.read_bytes()[:2000])),
        "no_model": ("model.keras", lambda path: path.unlink()),
        "bad_vocabulary": ("vocabulary.txt", lambda path: path.write_text("<pad>\nhello\n")),
        "short_vocabulary": ("vocabulary.txt", lambda path: path.write_text("<pad>\n<unk>\n<eol>\nbaby\n")),
        "bad_config": ("config.toml", lambda path: path.write_text("[model\nunits = 3\n")),
        "deep_config": ("config.toml", lambda path: path.write_text(DEEP)),
        "window_config": ("config.toml", lambda path: path.write_text(path.read_text().replace("window_size = 5", "window_size = 9"))),
        "mode_config": ("config.toml", lambda path: path.write_text(path.read_text().replace('mode = "windows"', 'mode = "bptt"'))),
        "no_config": ("config.toml", lambda path: path.unlink()),
        "garbage_history": ("history.csv", lambda path: path.write_text("garbage\x00\n1,2,3\n")),
    }
    for name, (file, damage) in damages.items():
        shutil.copytree(folder / "runs" / "good", folder / "runs" / name)
        damage(folder / "runs" / name / file)
    (folder / "runs" / "unfinished").mkdir()
    shutil.copytree(folder / "runs" / "good", folder / "runs" / "unfinished", dirs_exist_ok=True)
    (folder / "runs" / "unfinished" / "summary.json").unlink()
    manifest = json.loads((folder / "prepared" / "manifest.json").read_text())
    edits = {
        "no_files": lambda m: m.pop("files"), "no_settings": lambda m: m.pop("settings"),
        "no_valid_sources": lambda m: m.pop("valid_sources"), "list_splits": lambda m: m.update(splits=[]),
        "int_entry": lambda m: m["files"].update({"vocabulary.txt": 7}),
        "string_bytes": lambda m: m["files"]["vocabulary.txt"].update(bytes="147"),
        "f8_dtype": lambda m: m.update(dtype="<f8"), "zero_shard": lambda m: m.update(shard_tokens=0),
        "escape": lambda m: m["files"].update({"../x": {"bytes": 1, "crc32": 1}}),
        "not_json": None,
    }
    for name, edit in edits.items():
        shutil.copytree(folder / "prepared", folder / f"prepared_{name}")
        copy = json.loads(json.dumps(manifest))
        if edit is None:
            (folder / f"prepared_{name}" / "manifest.json").write_text("{not json")
        else:
            edit(copy)
            (folder / f"prepared_{name}" / "manifest.json").write_text(json.dumps(copy))


def cases() -> dict[str, list[list[str]]]:
    """Each command's hostile argument lists."""
    train = [["--corpus", path] for path in BAD_PATHS] + [["--valid", path, "--corpus", "song.txt"] for path in BAD_PATHS]
    train += [["--corpus", "song.txt", "--epochs", value] for value in BAD_NUMBERS]
    train += [["--corpus", "song.txt", "--set", f"{key}={value}"] for key in ("model.units", "data.window_size",
              "train.learning_rate", "corpus.valid_fraction", "data.batch_size") for value in BAD_NUMBERS]
    train += [["--config", path] for path in [*BAD_PATHS, "deep.toml", "badtoml.toml"]]
    train += [["--corpus", "song.txt", *TINY, "--run-name", name] for name in ("a/b", "..", ".", "a\nb", "", "/abs", ".hidden")]
    train += [["--corpus", "song.txt", *TINY, "--output-dir", path] for path in ("a_file", "a_file/sub", "/proc/x/y", "a\nb")]
    train += [["--corpus", "song.txt", *TINY, "--output-dir", ".", "--run-name", "mine", *flag] for flag in ([], ["--overwrite"])]
    train += [["--corpus", "song.txt", *TINY, "--output-dir", "runs", "--run-name", name] for name in
              ("garbage_history", "no_config", "bad_config", "deep_config", "unfinished")]
    train += [["--data", path, *TINY] for path in ["song.txt", "folder", "missing", *[f"prepared_{name}" for name in (
        "no_files", "no_settings", "no_valid_sources", "list_splits", "int_entry", "string_bytes", "f8_dtype", "zero_shard",
        "escape", "not_json")]]]
    train += [["--corpus", "short.txt"], ["--corpus", "short.txt", "--set", "data.mode=bptt"], ["--frobnicate"],
              ["--corpus", "song.txt", "--export", "a_file"], ["--corpus", "song.txt", "--device", "gpu", *TINY],
              ["--set", "model.unitz=3"], ["--set", "=3"], ["--set", "model"], ["--set", "model.units=" + DEEP[4:].strip()]]
    runs = [f"runs/{name}" for name in ("truncated_model", "no_model", "bad_vocabulary", "short_vocabulary", "bad_config",
                                        "deep_config", "window_config", "mode_config", "no_config")]
    generate = [["--model", path] for path in [*BAD_PATHS, *runs]]
    generate += [["--model", "runs/good", flag, value] for flag in ("--words", "--num-samples", "--seed", "--max-lines",
                 "--temperature", "--top-k", "--top-p") for value in BAD_NUMBERS]
    # (A NUL cannot be in a process's arguments at all, nor one longer than 128 KB; a prompt
    # typed with a NUL, or a megabyte long, read by --interactive, is tests/test_hostile_inputs.py's.)
    generate += [["--model", "runs/good", "--prompt", text] for text in ("\udcff", "a" * 100_000, "\x1b[2J")]
    evaluate = [["--model", path, "--text", "song.txt"] for path in [*BAD_PATHS, *runs]]
    evaluate += [["--model", "runs/good", "--text", path] for path in BAD_PATHS]
    evaluate += [["--model", "runs/good", "--text", "song.txt", "--batch-size", value] for value in BAD_NUMBERS]
    export = [["--model", path] for path in [*BAD_PATHS, *runs]]
    export += [["--model", "runs/good", "--out", path] for path in ("mine", "mine_saved", "a_file", "a_file/x", "/proc/x", "a\nb")]
    prepare = [["--out", "p", "--corpus", path] for path in BAD_PATHS]
    prepare += [["--out", path, "--corpus", "song.txt", *flag] for path in ("mine", "mine_work", "a_file", "a_file/x",
                "runs/good") for flag in ([], ["--overwrite"])]
    prepare += [["--out", "p", "--corpus", "song.txt", "--shard-tokens", value] for value in BAD_NUMBERS]
    prepare += [["--out", "p", "--corpus", "song.txt", "--config", path] for path in ("deep.toml", "badtoml.toml", "folder")]
    launch = [["--workers", value, "--", "--corpus", "song.txt"] for value in [*BAD_NUMBERS, "1000", "1"]]
    launch += [["--workers", "2", "--", *arguments] for arguments in (["--corpus", "missing.txt"], ["--frobnicate"],
               ["--corpus", "song.txt", "--set", "data.mode=bptt"], ["--corpus", "song.txt", "--set", "data.batch_size=7"])]
    tune = [["--search", path, "--corpus", "song.txt"] for path in [*BAD_PATHS, "deep.toml", "badtoml.toml"]]
    tune += [["--search", "search.toml", "--corpus", "song.txt", flag, value] for flag in ("--max-trials", "--max-minutes")
             for value in BAD_NUMBERS]
    tune += [["--search", "search.toml", "--corpus", "song.txt", "--run-name", name, *flag] for name in
             ("/abs/folder", "..", "a/b", "mine") for flag in ([], ["--overwrite"])]
    return {"train": train, "generate": generate, "evaluate": evaluate, "export": export, "prepare": prepare,
            "launch": launch, "tune": tune}


def runs_as_nobody() -> bool:
    """Whether this Python runs as user nobody (root would read the unreadable file)."""
    try:
        return subprocess.run([sys.executable, "-c", ""], user="nobody", capture_output=True, check=False).returncode == 0
    except (PermissionError, OSError):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="one command's cases")
    parser.add_argument("--keep", help="keep the scratch folder here")
    args = parser.parse_args()
    folder = Path(args.keep or tempfile.mkdtemp(prefix="keras_rnnlm_hostile_"))
    folder.mkdir(parents=True, exist_ok=True)
    users = world(folder)
    trained(folder)
    as_user = {"user": "nobody"} if os.geteuid() == 0 and runs_as_nobody() else {}
    if os.geteuid() == 0 and not as_user:  # root reads every file: the unreadable file would be read
        BAD_PATHS.remove("unreadable.txt")
        print("the unreadable-file cases are left out: root reads every file, and user nobody cannot run "
              f"{sys.executable} (a Python under /root, say)", file=sys.stderr)
    (folder / "unreadable.txt").chmod(0o000)
    if as_user:
        for path in [folder, *folder.rglob("*")]:
            if not path.is_symlink() and path.name != "unreadable.txt":
                path.chmod(0o777 if path.is_dir() else 0o666)
    counts, bad = collections.Counter(), []
    for command, argument_lists in cases().items():
        if args.only and command != args.only:
            continue
        for argv in argument_lists:
            try:
                result = subprocess.run([sys.executable, "-m", f"keras_rnnlm.{command}", *argv], cwd=folder, capture_output=True,
                                        text=True, timeout=600, errors="replace", **as_user)
            except subprocess.TimeoutExpired:
                counts[command, "hung"] += 1
                bad.append((command, argv, "no answer in 10 minutes"))
                continue
            lines = result.stderr.strip().splitlines()
            one_line = result.returncode == 2 and result.stdout == "" and len(lines) == 1 and lines[0].startswith("error: ")
            changed = [str(path.relative_to(folder)) for path, data in users.items()
                       if not path.is_file() or (path.name != "unreadable.txt" and path.read_bytes() != data)]
            outcome = "one line" if one_line else "accepted" if result.returncode == 0 else "other"
            if changed:
                outcome = "changed a file of the user's"
            counts[command, outcome] += 1
            if outcome not in ("one line", "accepted"):
                bad.append((command, argv, f"status {result.returncode}, {changed or result.stderr.strip()[-300:]}"))
    print(f"{'command':>9} {'tried':>6} {'one line':>9} {'accepted':>9} {'anything else':>14}")
    summary = {}
    for command in cases():
        tried = sum(count for (name, _), count in counts.items() if name == command)
        if not tried:
            continue
        other = tried - counts[command, "one line"] - counts[command, "accepted"]
        summary[command] = {"tried": tried, "one line": counts[command, "one line"], "accepted": counts[command, "accepted"],
                            "anything else": other}
        print(f"{command:>9} {tried:>6} {counts[command, 'one line']:>9} {counts[command, 'accepted']:>9} {other:>14}")
    for command, argv, what in bad:
        print(f"  {command} {' '.join(repr(part) if not part.isprintable() else part for part in argv)[:150]}: {what}")
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps({"commands": summary, "anything_else": len(bad)}))


if __name__ == "__main__":
    main()
