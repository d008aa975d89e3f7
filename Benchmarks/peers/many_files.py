#!/usr/bin/env python3
"""Many-files benchmark: spate -i vs aria2c -i, curl -Z and wget2 -i on nginx over loopback.

Scenarios (every tool held to 16 connections to the host):
  mixed  300 files of 1 MiB + 4 of 256 MiB (seeded shuffle), nginx limit_rate 25m per connection
         with sendfile_max_chunk 256k so every byte is paced; ideal 16 x 25 MiB/s.
  small  10,000 files of 0-64 KiB (seeded sizes) from an uncapped nginx.

Every output file is compared byte for byte with its source; runs are interleaved tool by tool,
nginx is restarted and `sync` run before each; medians, CPU seconds and peak RSS are printed as
a Markdown table with ratios against the best peer.

Usage: many_files.py --spate PATH [--spate-b PATH] [--runs 3] [--scenarios mixed,small]
                     [--tools ...] [--pause-page-reporting] [--fresh-fs small [--loop-direct-io]]
                     [--keep-outputs]

--fresh-fs SCENARIOS (root): those scenarios' outputs go to a new ext4 file system (a
loop-mounted image, made again before every run, not timed). Why: on an ext4 that just deleted the previous run's 10,000 files, every
file creation scans for recently deleted inodes (ext4's recently_deleted(); perf showed 56 % of
curl's time there, 8 s instead of 1 s), so whichever tool runs after a delete pays for it.
Not for the mixed scenario: its 1.3 GB then go through the loop device, whose writeback
dominates every tool that syncs (spate fsyncs each file before naming it; the peers do not).
A loop device set up by `mount -o loop` writes through a second page cache (the image file's),
so every byte a tool makes durable is copied and written back twice: a cost no disk has.
--loop-direct-io sets the loop device up with O_DIRECT (one copy, as a disk).

--keep-outputs: the other way around recently deleted inodes, on the work directory's own file
system (a real disk): every run writes to a directory of its own and nothing is deleted, before
or after; the script says where the outputs are. Needs the space of every run (10,000 small
files: 312 MiB per run and tool). Delete them when done, and not just before a measurement:
for minutes after a large delete (and its discards, on a `discard` mount) every tool here ran
1.5-2.5x slower, the first runs of an invocation most.

Tool `curl-sync`: curl -Z, then `sync -f` of the output file system, timed together: the price
of curl's files being on disk when it returns, as spate's are (not in the default --tools).
"""
import argparse, filecmp, os, random, shutil, statistics, subprocess, sys, datetime, platform

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import NGINX_PREAMBLE, run_timed, pause_page_reporting, restore_page_reporting, start_nginx  # noqa: E402

NGINX_CONF = NGINX_PREAMBLE + """
    server {{ listen 127.0.0.1:{port_small}; root {www}; }}
    server {{ listen 127.0.0.1:{port_mixed}; root {www}; limit_rate 25m; sendfile_max_chunk 256k; }}
}}
"""
PORTS = {"small": 18290, "mixed": 18291}


def make_tree(www, scenario):
    """Creates the scenario's files (once); returns [(relative path, size)] in manifest order."""
    root = os.path.join(www, scenario)
    rng = random.Random(20261130)
    if scenario == "mixed":
        files = [(f"s/{i:03}.bin", 1 << 20) for i in range(300)] + [(f"big/{i}.bin", 256 << 20) for i in range(4)]
        rng.shuffle(files)
    else:
        files = [(f"{i // 1000}/{i:05}.bin", rng.randrange(0, 64 * 1024 + 1)) for i in range(10_000)]
    stamp = os.path.join(root, ".complete")
    if not os.path.exists(stamp):
        print(f"generating {len(files)} files under {root}", file=sys.stderr)
        with open("/dev/urandom", "rb") as src:
            for rel, size in files:
                path = os.path.join(root, rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as dst:
                    left = size
                    while left:
                        chunk = src.read(min(left, 1 << 24))
                        dst.write(chunk)
                        left -= len(chunk)
        open(stamp, "w").close()
    return [(f"{scenario}/{rel}", size) for rel, size in files]


def detach_loops(image):
    """Detaches the loop devices still on `image` (one set up by `losetup`, unlike `mount -o
    loop`'s, stays after its unmount)."""
    listed = subprocess.run(["losetup", "--noheadings", "--output", "NAME", "--associated", image],
                            capture_output=True, text=True).stdout.split()
    for device in listed:
        subprocess.run(["losetup", "--detach", device], stderr=subprocess.DEVNULL)


def fresh_fs(work, size, direct_io=False):
    """Unmounts the previous image, makes a new ext4 and mounts it at WORK/mnt (with
    `direct_io`, through a loop device that writes to its image with O_DIRECT)."""
    mnt = os.path.join(work, "mnt")
    image = os.path.join(work, "outputs.ext4")
    os.makedirs(mnt, exist_ok=True)
    subprocess.run(["umount", mnt], stderr=subprocess.DEVNULL)
    detach_loops(image)
    if os.path.exists(image):
        os.unlink(image)
    subprocess.run(["truncate", "-s", size, image], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True)
    if direct_io:
        device = subprocess.run(["losetup", "--direct-io=on", "--find", "--show", image], check=True,
                                capture_output=True, text=True).stdout.strip()
        subprocess.run(["mount", device, mnt], check=True)
    else:
        subprocess.run(["mount", "-o", "loop", image, mnt], check=True)


def write_lists(work, scenario, files, base):
    """Each tool's input list; returns their paths."""
    lists = {}
    p = os.path.join(work, f"{scenario}.spate.txt")
    with open(p, "w") as f:
        for rel, _ in files:
            f.write(f"{base}/{rel} {rel}\n")
    lists["spate"] = p
    p = os.path.join(work, f"{scenario}.aria2.txt")
    with open(p, "w") as f:
        for rel, _ in files:
            f.write(f"{base}/{rel}\n  out={rel}\n")
    lists["aria2c"] = p
    p = os.path.join(work, f"{scenario}.curl.txt")
    with open(p, "w") as f:
        for rel, _ in files:
            f.write(f'url = "{base}/{rel}"\noutput = "{rel}"\n')
    lists["curl"] = p
    p = os.path.join(work, f"{scenario}.wget2.txt")
    with open(p, "w") as f:
        for rel, _ in files:
            f.write(f"{base}/{rel}\n")
    lists["wget2"] = p
    return lists


def tools_for(args, lists, out):
    spate = args.spate
    tools = {
        "spate": [spate, "-i", lists["spate"], "-d", out, "-c", "16", "--max-per-host", "16", "-q"],
        "aria2c-j4x4": ["aria2c", "-i", lists["aria2c"], "-d", out, "-j4", "-x4", "-s4", "-k1M", "-q",
                        "--allow-overwrite=true", "--auto-file-renaming=false"],
        "aria2c-j16x1": ["aria2c", "-i", lists["aria2c"], "-d", out, "-j16", "-x1", "-q",
                         "--allow-overwrite=true", "--auto-file-renaming=false"],
        "curl": ["curl", "-s", "-Z", "--parallel-max", "16", "--create-dirs", "--output-dir", out, "-K", lists["curl"]],
        # curl, then one flush of the output's file system: what curl costs when its files
        # must be on disk when it returns, as spate's are (spate reports a file only then).
        "curl-sync": ["sh", "-c", 'curl -s -Z --parallel-max 16 --create-dirs --output-dir "$1" -K "$2" && sync -f "$1"',
                      "curl-sync", out, lists["curl"]],
        "wget2": ["wget2", "-q", "-i", lists["wget2"], "--max-threads=16", "-nH", "-x", "-P", out,
                  "--no-robots", "--compression=identity"],
    }
    if args.spate_b:
        tools["spate-b"] = [args.spate_b] + tools["spate"][1:]
    return tools


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spate", required=True)
    ap.add_argument("--spate-b", help="another spate build, run as the tool spate-b (A/B in one run)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--scenarios", default="mixed,small")
    ap.add_argument("--tools", default="spate,aria2c-j4x4,aria2c-j16x1,curl,wget2")
    ap.add_argument("--work-dir", default="/tmp/spate-many")
    ap.add_argument("--pause-page-reporting", action="store_true")
    ap.add_argument("--fresh-fs", default="", help="SCENARIOS whose outputs go to a new ext4 (loop image) for every run")
    ap.add_argument("--fs-size", default="4G", help="size of the --fresh-fs image")
    ap.add_argument("--keep-outputs", action="store_true",
                    help="every run writes to a directory of its own and nothing is deleted (no run creates "
                         "files where another just deleted some; needs the space of every run)")
    ap.add_argument("--loop-direct-io", action="store_true",
                    help="the --fresh-fs image's loop device writes with O_DIRECT (as a disk: no second page cache)")
    args = ap.parse_args()
    if args.keep_outputs and args.fresh_fs:
        ap.error("--keep-outputs is for the work directory's own disk; --fresh-fs makes a new file system every run")
    if args.loop_direct_io and not args.fresh_fs:
        ap.error("--loop-direct-io needs --fresh-fs")

    work = args.work_dir
    www = os.path.join(work, "www")
    fresh = set(filter(None, args.fresh_fs.split(",")))
    os.makedirs(www, exist_ok=True)
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(work=work, www=www, port_small=PORTS["small"], port_mixed=PORTS["mixed"]))

    reporting = pause_page_reporting() if args.pause_page_reporting else None
    results = {}
    sizes = {}
    try:
        for scenario in args.scenarios.split(","):
            files = make_tree(www, scenario)
            sizes[scenario] = (len(files), sum(s for _, s in files))
            lists = write_lists(work, scenario, files, f"http://127.0.0.1:{PORTS[scenario]}")
            base = os.path.join(work, "mnt", "out") if scenario in fresh else os.path.join(work, "out")
            if args.keep_outputs:
                # Nothing deleted, before or after: a new directory for this invocation.
                base = os.path.join(base, datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + "-" + scenario)
            else:
                shutil.rmtree(base, ignore_errors=True)
            order = [t for t in args.tools.split(",") if t in tools_for(args, lists, base)]
            for run in range(args.runs):
                for tool in order:
                    if scenario in fresh:
                        fresh_fs(work, args.fs_size, args.loop_direct_io)
                    # --keep-outputs: every run its own directory, nothing deleted,
                    # so no run creates files where another just deleted some.
                    out = os.path.join(base, f"{tool}-{run}") if args.keep_outputs else base
                    shutil.rmtree(out, ignore_errors=True)
                    os.makedirs(out)
                    tools = tools_for(args, lists, out)
                    subprocess.run(["sync"])
                    nginx = start_nginx(conf, work, PORTS.values())
                    try:
                        wall, cpu, rss, status, err = run_timed(tools[tool])
                    finally:
                        nginx.terminate()
                        nginx.wait()
                    wrong = sum(1 for rel, _ in files
                                if not os.path.exists(os.path.join(out, rel))
                                or not filecmp.cmp(os.path.join(www, rel), os.path.join(out, rel), shallow=False))
                    ok = status == 0 and wrong == 0
                    results.setdefault((scenario, tool), []).append((wall, cpu, rss, ok))
                    print(f"{scenario:6} run {run + 1} {tool:13} {wall:6.2f} s  cpu {cpu:5.2f} s  rss {rss / 1024:5.1f} MiB  "
                          f"{'all exact' if ok else f'FAILED: exit {status}, {wrong} wrong/missing ' + err.strip()[:200]}",
                          file=sys.stderr, flush=True)
            if args.keep_outputs:
                print(f"outputs kept in {base}: delete them when done (ext4 then creates files more slowly "
                      f"for a few minutes)", file=sys.stderr)
            else:
                shutil.rmtree(base, ignore_errors=True)
    finally:
        if fresh:
            subprocess.run(["umount", os.path.join(work, "mnt")], stderr=subprocess.DEVNULL)
            detach_loops(os.path.join(work, "outputs.ext4"))
        if reporting:
            restore_page_reporting(reporting)

    print()
    print(f"{datetime.date.today()} · {platform.node()} · {os.cpu_count()} cores · median of {args.runs}, interleaved"
          f"{' · free page reporting paused' if reporting else ''}")
    print()
    print("| scenario | tool | median time | throughput | files/s | CPU s | peak RSS | tool ÷ spate | all exact |")
    print("|---|---|---|---|---|---|---|---|---|")
    for scenario in args.scenarios.split(","):
        count, total = sizes[scenario]
        spate_med = statistics.median(r[0] for r in results.get((scenario, "spate"), [(0,)])) or None
        for tool in [t for t in args.tools.split(",") if (scenario, t) in results]:
            rs = results[(scenario, tool)]
            med = statistics.median(r[0] for r in rs)
            cpu = statistics.median(r[1] for r in rs)
            rss = max(r[2] for r in rs) / 1024
            ratio = f"{med / spate_med:.2f}×" if spate_med and tool != "spate" else "—"
            ok = "yes" if all(r[3] for r in rs) else "NO"
            print(f"| {scenario} | {tool} | {med:.2f} s | {total / med / 1048576:.0f} MiB/s | {count / med:.0f} | "
                  f"{cpu:.2f} | {rss:.1f} MiB | {ratio} | {ok} |")
    print()
    print("tool ÷ spate: the tool's median time divided by spate's (above 1: spate is faster).")
    print("mixed: ideal 16 x 25 MiB/s = 400 MiB/s.")


if __name__ == "__main__":
    main()
