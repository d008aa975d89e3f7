import Benchmark
import Glibc
import Spate
import SpateTestContent
import SpateTestServer
import Synchronization

/// Benchmarks with committed thresholds (Thresholds/), so regressions show:
///   cd Benchmarks && swift package --allow-writing-to-package-directory benchmark
///   swift package --allow-writing-to-package-directory benchmark baseline check --check-absolute-path Thresholds
///
/// The end-to-end download serves generated content from the in-process test server, so its
/// memory figures include the server's buffers; spate's own peak RSS against nginx is measured
/// by Benchmarks/peers/compare.py.
/// How far a p90 may move from the committed threshold (Thresholds/) before `thresholds check`
/// fails, in percent. Without these the check allows no difference at all. On this 2-core VM
/// the p90 of the same build moved by up to 35 % between runs (more without
/// `--pause-page-reporting`), so timings get 50 %: the check catches gross regressions, and
/// side-by-side comparisons (peers/compare.py) measure the rest. Memory and allocation counts
/// are steadier.
///
/// Threshold files are named after the benchmark with its spaces kept: package-benchmark
/// 1.38 writes them with spaces turned into underscores but reads them with spaces, so
/// `Benchmarks/thresholds update` renames what `thresholds update` writes. Names avoid "/".
var tolerances: [BenchmarkMetric: BenchmarkThresholds] {
    [
        .wallClock: .init(relative: [.p90: 50]),
        .throughput: .init(relative: [.p90: 50]),
        .cpuTotal: .init(relative: [.p90: 50]),
        .peakMemoryResident: .init(relative: [.p90: 10]),
        .mallocCountTotal: .init(relative: [.p90: 10]),
    ]
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .peakMemoryResident, .mallocCountTotal],
        warmupIterations: 1,
        scalingFactor: .one,
        maxDuration: .seconds(20),
        maxIterations: 5,
        thresholds: tolerances
    )

    // MARK: End to end

    // The same 256 MiB download four ways: default, with --checksum sha256, without the
    // journal, and with -c 16 fixed. Side by side, so the cost of each feature shows.
    let size: Int64 = 256 << 20
    let content = GeneratedContent(seed: 42, size: size)
    let sha256 = try! Checksum(algorithm: .sha256, digest: content.digest(.sha256))
    let variants: [(String, @Sendable (inout DownloadOptions) -> Void)] = [
        ("default", { _ in }),
        ("--checksum sha256", { $0.checksum = sha256 }),
        ("--no-journal", { $0.journal = false }),
        ("-c 16 --no-tuning", { $0.connections = 16; $0.selfTuning = false }),
    ]
    for (name, configure) in variants {
        Benchmark("Download 256 MiB from the loopback test server, \(name)",
                  configuration: .init(metrics: [.wallClock, .throughput, .cpuTotal, .peakMemoryResident, .mallocCountTotal],
                                       maxIterations: 5)) { benchmark in
            try await measureDownloads(benchmark, of: TestServer.File(content: content), configure: configure)
        }
    }

    // MARK: Network shapes

    // The in-process server paces each reply; spate's requests on one connection run one after
    // another, so this is a per-connection cap like nginx's limit_rate (but without nginx's
    // unpaced first 2 MiB). 16 connections × 25 MB/s: 256 MiB ideally takes 0.67 s.
    let shapes: [(String, TestServer.File, @Sendable (TestServer) -> Void)] = [
        ("25 MB per second per connection, -c 16", TestServer.File(content: content), { server in
            server.setHook { request in
                var plan = server.standardPlan(for: request)
                plan.bytesPerSecond = 25_000_000
                return plan
            }
        }),
        ("25 MB per second per connection, the first at 1 MB per second (straggler), -c 16", TestServer.File(content: content), { server in
            let slow = FirstConnection()
            server.setHook { request in
                var plan = server.standardPlan(for: request)
                let isSlow = slow.isFirst(request.connectionID)
                plan.bytesPerSecond = isSlow ? 1_000_000 : 25_000_000
                return plan
            }
        }),
        ("a server that ignores Range (one stream)", TestServer.File(content: content, acceptsRanges: false), { _ in }),
    ]
    for (name, file, shape) in shapes {
        Benchmark("Download 256 MiB, \(name)",
                  configuration: .init(metrics: [.wallClock, .throughput, .cpuTotal, .peakMemoryResident],
                                       maxIterations: 5)) { benchmark in
            try await measureDownloads(benchmark, of: file, shape: shape) { $0.connections = 16 }
        }
    }

    // MARK: Many downloads in one session

    // 8 downloads of 128 MiB at once in one session, every reply paced at 25 MiB/s (a
    // per-connection cap), global budget 16: the ideal aggregate is 16 × 25 MiB/s = 400 MiB/s,
    // 2.56 s for the 1 GiB. Connections a finishing download gives back go to the others.
    let sessionFiles = (0..<8).map { GeneratedContent(seed: 50 + UInt64($0), size: 128 << 20) }
    Benchmark("Session: 8 downloads of 128 MiB at once, 25 MiB per second per connection, 16 connections",
              configuration: .init(metrics: [.wallClock, .cpuTotal, .peakMemoryResident], warmupIterations: 0,
                                   maxDuration: .seconds(60), maxIterations: 5)) { benchmark in
        let server = try await TestServer.start()
        for (i, content) in sessionFiles.enumerated() { server.addFile("/s\(i).bin", TestServer.File(content: content)) }
        server.setHook { request in
            var plan = server.standardPlan(for: request)
            plan.bytesPerSecond = 25 << 20
            return plan
        }
        let dir = FileManager_temporaryDirectory()
        for _ in benchmark.scaledIterations {
            let session = try DownloadSession(limits: .init(maxConnections: 16, maxConnectionsPerHost: 16))
            let downloads = try sessionFiles.indices.map { i in
                var options = DownloadOptions()
                options.overwrite = true
                return try Download(url: server.url("/s\(i).bin"), to: dir + "/s\(i).bin", options: options, session: session)
            }
            let started = ContinuousClock.now
            benchmark.startMeasurement()
            try await withThrowingTaskGroup(of: DownloadResult.self) { group in
                for download in downloads { group.addTask { try await download.run() } }
                for try await result in group { blackHole(result.bytes) }
            }
            benchmark.stopMeasurement()
            let seconds = (ContinuousClock.now - started).secondsDouble
            let rate = Double(8 << 27) / seconds / 1_048_576
            print("session: 1 GiB in \(String(format: "%.2f", seconds)) s: \(String(format: "%.0f", rate)) MiB/s, \(String(format: "%.1f", rate / 4)) % of 16 × 25 MiB/s")
            session.shutdown()
            for i in sessionFiles.indices { unlink(dir + "/s\(i).bin") }
        }
        rmdir(dir)
        await server.stop()
    }

    // MARK: Many files

    // The issue's mixed batch: 300 files of 1 MiB and 4 of 256 MiB (shuffled with a fixed
    // seed), every reply paced at 25 MiB/s, 16 connections to the one host: the ideal is
    // 16 × 25 MiB/s = 400 MiB/s, 3.31 s for the 1,324 MiB. Small files are one request each;
    // the big ones take the connections the small ones leave.
    var batchFiles = (0..<300).map { (name: "s\($0).bin", content: GeneratedContent(seed: 900 + UInt64($0), size: 1 << 20)) }
        + (0..<4).map { (name: "b\($0).bin", content: GeneratedContent(seed: 1900 + UInt64($0), size: 256 << 20)) }
    var shuffle = SplitMix64(seed: 20_261_130)
    batchFiles.shuffle(using: &shuffle)
    let batchBytes = batchFiles.reduce(Int64(0)) { $0 + $1.content.size }
    Benchmark("Batch: 300 files of 1 MiB and 4 of 256 MiB, 25 MiB per second per connection, 16 connections",
              configuration: .init(metrics: [.wallClock, .cpuTotal, .peakMemoryResident], warmupIterations: 0,
                                   maxDuration: .seconds(90), maxIterations: 3)) { benchmark in
        let server = try await TestServer.start()
        for file in batchFiles { server.addFile("/m/" + file.name, TestServer.File(content: file.content)) }
        server.setHook { request in
            var plan = server.standardPlan(for: request)
            plan.bytesPerSecond = 25 << 20
            return plan
        }
        let dir = FileManager_temporaryDirectory()
        for _ in benchmark.scaledIterations {
            var options = BatchOptions()
            options.directory = dir
            options.limits = DownloadSession.Limits(maxConnections: 16, maxConnectionsPerHost: 16)
            options.download.wholeFileBytes = DownloadOptions.wholeFileDefault
            let batch = try DownloadBatch(options: options) { _ in }
            let entries = batchFiles.enumerated().map { ManifestEntry(line: $0 + 1, url: server.url("/m/" + $1.name), destination: $1.name) }
            let started = ContinuousClock.now
            benchmark.startMeasurement()
            let summary = try await batch.run(entries.makeIterator())
            benchmark.stopMeasurement()
            precondition(summary.succeeded == batchFiles.count, "batch: \(summary.failed) failed")
            let seconds = (ContinuousClock.now - started).secondsDouble
            let rate = Double(batchBytes) / seconds / 1_048_576
            print("batch: \(batchBytes >> 20) MiB in \(String(format: "%.2f", seconds)) s: \(String(format: "%.0f", rate)) MiB/s, \(String(format: "%.1f", rate / 4)) % of 16 × 25 MiB/s")
            for file in batchFiles { unlink(dir + "/" + file.name) }
        }
        rmdir(dir)
        await server.stop()
    }

    // Checking a list of a million lines and taking one shard of a thousand: the work before
    // the first request of `spate -i LIST --shard 0/1000` (the list is never held in memory).
    Benchmark("Manifest: check 1,000,000 lines, take one shard of 1000",
              configuration: .init(metrics: [.wallClock, .peakMemoryResident], warmupIterations: 0, maxIterations: 5)) { benchmark in
        let dir = FileManager_temporaryDirectory()
        let path = dir + "/list.txt"
        var text = ""
        text.reserveCapacity(80 << 20)
        for i in 0..<1_000_000 { text += "https://data.example.com/sets/v1/f\(i).bin?seed=\(i) d\(i % 100)/f\(i).bin\n" }
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        _ = text.withCString { write(fd, $0, strlen($0)) }
        close(fd)
        text = ""
        for _ in benchmark.scaledIterations {
            benchmark.startMeasurement()
            let manifest = try Manifest(path: path, shard: ManifestShard(index: 0, count: 1000))
            try manifest.validate()
            benchmark.stopMeasurement()
            blackHole(manifest.selectedCount)
        }
        unlink(path)
        rmdir(dir)
    }

    // MARK: Memory against file size

    // Peak resident memory must not grow with the file: the same download at 1 GiB and 8 GiB.
    // Includes the in-process server (compare.py measures spate alone against nginx).
    for gib in [1, 8] {
        let big = GeneratedContent(seed: 43, size: Int64(gib) << 30)
        Benchmark("Peak memory, \(gib) GiB download, -c 16",
                  configuration: .init(metrics: [.peakMemoryResident], warmupIterations: 0,
                                       maxDuration: .seconds(60), maxIterations: 1)) { benchmark in
            try await measureDownloads(benchmark, of: TestServer.File(content: big)) { $0.connections = 16 }
        }
    }

    // MARK: Planning (pure)

    Benchmark("Ledger: 1 GiB in 256 KiB requests, 16 workers, out-of-order completion",
              configuration: .init(metrics: [.wallClock, .throughput, .mallocCountTotal], maxIterations: 20)) { benchmark in
        for _ in benchmark.scaledIterations {
            var ledger = RangeLedger(size: 1 << 30)
            var live: [RangeLedger.Assignment] = []
            var rng = SplitMix64(seed: 1)
            while !ledger.isComplete {
                while live.count < 16, let a = ledger.assign(maxBytes: 256 * 1024) { live.append(a) }
                let i = Int(rng.next() % UInt64(live.count))
                let a = live.remove(at: i)
                ledger.finish(a.id, doneThrough: a.range.end)
            }
            blackHole(ledger.watermark)
        }
    }

    Benchmark("RangeSet: 100k out-of-order inserts",
              configuration: .init(metrics: [.wallClock, .mallocCountTotal], maxIterations: 20)) { benchmark in
        for _ in benchmark.scaledIterations {
            var set = RangeSet()
            var rng = SplitMix64(seed: 2)
            for _ in 0..<100_000 {
                let start = Int64(rng.next() % (1 << 30))
                set.insert(ByteRange(start, start + 4096))
            }
            blackHole(set.count)
        }
    }

    // MARK: Journal

    // A journal of 1,000,000 disjoint recorded ranges (every other 4 KiB block of an 8 GB file),
    // in 245 frames of 4096 records like group commits write them: read, decode, merge.
    Benchmark("Journal: load 1,000,000 recorded ranges",
              configuration: .init(metrics: [.wallClock, .peakMemoryResident], maxIterations: 10)) { benchmark in
        let dir = FileManager_temporaryDirectory()
        let path = dir + "/bench.bin"
        let journal = path + ".part.journal"
        var bytes = JournalCodec.encodeHeader(JournalCodec.Header(
            totalSize: 8 << 30, fingerprint: [UInt8](repeating: 1, count: 32), validator: .strongETag("\"bench\"")))
        var batch: [HashedRange] = []
        for i in 0..<1_000_000 {
            batch.append(HashedRange(range: ByteRange(Int64(i) * 8192, Int64(i) * 8192 + 4096), crc: UInt32(truncatingIfNeeded: i &* 2_654_435_761)))
            if batch.count == 4096 || i == 999_999 {
                bytes += JournalCodec.encodeFrame(.append, batch)
                batch.removeAll()
            }
        }
        let fd = open(journal, O_CREAT | O_WRONLY | O_TRUNC, 0o600)
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        print("journal of 1,000,000 ranges: \(bytes.count) bytes on disk")
        for _ in benchmark.scaledIterations {
            let report = try JournalReport.read(path)
            blackHole(report.doneBytes)
        }
        unlink(journal)
        rmdir(dir)
    }

    Benchmark("Journal: encode and decode a frame of 4096 records",
              configuration: .init(metrics: [.wallClock, .mallocCountTotal], maxIterations: 200)) { benchmark in
        let records = (0..<4096).map { i in
            HashedRange(range: ByteRange(Int64(i) * 1_048_576, Int64(i) * 1_048_576 + 524_288), crc: UInt32(truncatingIfNeeded: i &* 2_654_435_761))
        }
        let header = JournalCodec.encodeHeader(JournalCodec.Header(
            totalSize: 8 << 30, fingerprint: [UInt8](repeating: 1, count: 32), validator: .strongETag("\"bench\"")))
        for _ in benchmark.scaledIterations {
            let bytes = header + JournalCodec.encodeFrame(.append, records)
            let decoded = try bytes.withUnsafeBytes { try JournalCodec.decode($0) }
            blackHole(decoded.records.count)
        }
    }

    // 100,000 samples: with 1,000 (a few µs) the p90 doubled from run to run.
    Benchmark("Connection tuner: 100,000 samples",
              configuration: .init(metrics: [.wallClock, .mallocCountTotal], maxIterations: 100)) { benchmark in
        for _ in benchmark.scaledIterations {
            var tuner = ConnectionTuner(maximum: 64)
            for i in 0..<100_000 {
                _ = tuner.observe(rate: Double(min(tuner.target, 40)) * 25e6 + Double(i % 7), throttled: false)
            }
            blackHole(tuner.target)
        }
    }

    // MARK: Integrity

    Benchmark("SHA-256 of 256 MiB (OpenSSL EVP)",
              configuration: .init(metrics: [.wallClock, .throughput], maxIterations: 5)) { benchmark in
        let buffer = generatedBuffer(seed: 3, bytes: 1 << 20)
        defer { buffer.deallocate() }
        for _ in benchmark.scaledIterations {
            let digest = Digest(.sha256)
            for _ in 0..<256 { digest.update(UnsafeRawBufferPointer(buffer)) }
            blackHole(digest.finalize())
        }
    }

    // The journal's per-range CRC runs over every byte written: its cost is CPU per GiB.
    Benchmark("CRC-32 of 1 GiB in 64 KiB buffers (journal hash, ISA-L)",
              configuration: .init(metrics: [.wallClock, .throughput], maxIterations: 10)) { benchmark in
        let buffer = generatedBuffer(seed: 4, bytes: 64 << 10)
        defer { buffer.deallocate() }
        for _ in benchmark.scaledIterations {
            var crc: UInt32 = 0
            for _ in 0..<16_384 { crc = CRC32.checksum(UnsafeRawBufferPointer(buffer), continuing: crc) }
            blackHole(crc)
        }
    }
}

/// A buffer of `bytes` generated bytes (the hashing benchmarks' input); the caller deallocates it.
func generatedBuffer(seed: UInt64, bytes: Int) -> UnsafeMutableRawBufferPointer {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes, alignment: 64)
    GeneratedContent(seed: seed, size: Int64(bytes)).fill(buffer, from: 0)
    return buffer
}

/// Serves `file` from an in-process test server (`shape` may install a reply hook) and measures
/// one download of it per iteration, with `configure`d options; set-up and clean-up are not
/// measured.
func measureDownloads(_ benchmark: Benchmark, of file: TestServer.File,
                      shape: (TestServer) -> Void = { _ in },
                      configure: (inout DownloadOptions) -> Void) async throws {
    let server = try await TestServer.start()
    server.addFile("/bench.bin", file)
    shape(server)
    let dir = FileManager_temporaryDirectory()
    let path = dir + "/bench.bin"
    for _ in benchmark.scaledIterations {
        unlink(path)
        var options = DownloadOptions()
        options.overwrite = true
        configure(&options)
        let download = try Download(url: server.url("/bench.bin"), to: path, options: options)
        benchmark.startMeasurement()
        _ = try await download.run()
        benchmark.stopMeasurement()
        unlink(path)
    }
    rmdir(dir)
    await server.stop()
}

func FileManager_temporaryDirectory() -> String {
    var template = Array("/tmp/spate-bench-XXXXXX".utf8CString)
    _ = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    return template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
}

/// Remembers the first connection a server saw (the straggler benchmark slows that one).
final class FirstConnection: Sendable {
    private let first = Mutex<Int?>(nil)

    func isFirst(_ id: Int) -> Bool {
        first.withLock { first in
            if first == nil { first = id }
            return first == id
        }
    }
}
