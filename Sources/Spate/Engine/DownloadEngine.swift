import Glibc

/// One download from probe to final rename: probe → plan → fetch (a task group of range
/// workers) → verify → finish. Everything it starts ends inside `run()`.
final class DownloadEngine: Sendable {
    let destination: String
    let context: EngineContext
    let resolver: RemoteResolver

    var options: DownloadOptions { context.options }
    var counters: DownloadCounters { context.counters }
    /// The remote size once the probe knows it (for progress reports).
    var knownSize: Int64? { context.snapshot.knownSize }

    init(url: RemoteURL, destination: String, options: DownloadOptions,
         emit: @escaping @Sendable (DownloadEvent) -> Void) {
        self.destination = destination
        self.context = EngineContext(url: url, options: options, emit: emit)
        self.resolver = RemoteResolver(context: context)
    }

    func emit(_ event: DownloadEvent) { context.emit(event) }

    func run() async throws -> DownloadResult {
        defer { context.loop.shutdown() }
        let started = ContinuousClock.now
        try checkDestination()
        var remote = try await resolver.resolve()
        var restarts = 0
        while true {
            do {
                let (bytes, connections) = try await attempt(remote)
                let stats = context.snapshot
                return DownloadResult(
                    path: destination, bytes: bytes, elapsed: ContinuousClock.now - started,
                    verifiedChecksum: options.checksum, connections: connections, requests: stats.requests,
                    retries: stats.retries)
            } catch let error as SpateError where error.kind == .remoteChanged && options.restartOnChange
                && restarts < DownloadOptions.maximumRestarts {
                restarts += 1
                emit(.notice("\(error.message); starting over (\(restarts) of \(DownloadOptions.maximumRestarts))"))
                counters.bytesWritten.store(0, ordering: .relaxed)
                remote = try await resolver.resolve()
            }
        }
    }

    /// One pass over the file as `remote` describes it. Returns the size and connections used.
    private func attempt(_ remote: RemoteFile) async throws -> (Int64, Int) {
        let size = remote.size
        context.setKnownSize(size)
        let segmented = remote.acceptsRanges && (size ?? 0) > 0
        let sizer = RequestSizer(fileSize: size ?? 0, connections: options.connections, fixedBytes: options.chunkBytes)
        let connections = segmented ? sizer.usefulConnections(fileSize: size!) : 1
        emit(.started(DownloadPlan(
            url: remote.url.redacted, totalBytes: size, acceptsRanges: remote.acceptsRanges,
            connections: connections, requestBytes: segmented ? sizer.baseBytes : nil)))
        if !remote.acceptsRanges && (size ?? 1) > 0 {
            emit(.notice("the server does not support byte ranges: downloading with one connection"))
        }

        let file = try OutputFile(creatingFor: destination, replacePartial: options.overwrite)
        var finished = false
        defer { if !finished { file.discard() } }
        let writer = FileWriter(file: file, buffers: connections + 8)
        defer { writer.stop() }  // runs before the discard above: no write lands after it
        let hasher = options.checksum.map { WatermarkHasher(fd: file.fd, path: file.partPath, algorithm: $0.algorithm) }
        defer { hasher?.stop() }

        let totalBytes: Int64
        if segmented {
            try file.preallocate(size!)
            let scheduler = RangeScheduler(context: context, resolver: resolver, size: size!, writer: writer,
                                           hasher: hasher, sizer: sizer, workers: connections)
            try await scheduler.run()
            totalBytes = size!
        } else if size == 0 {
            totalBytes = 0
        } else {
            if let size { try file.preallocate(size) }
            totalBytes = try await StreamFetcher(context: context, remote: remote, writer: writer).run()
            hasher?.advance(to: totalBytes)
        }
        writer.stop()
        if !segmented && size != 0 { try file.truncate(to: totalBytes) }
        if let hasher { try await verify(hasher, size: totalBytes) }

        try file.finish(mode: FileMode.newFileMode, replaceExisting: options.overwrite)
        finished = true
        return (totalBytes, connections)
    }

    private func verify(_ hasher: WatermarkHasher, size: Int64) async throws {
        guard let expected = options.checksum else { return }
        emit(.verifying)
        let actual = try await hasher.finish(size: size)
        guard actual == expected.digest else {
            throw SpateError(.checksumMismatch,
                             "checksum mismatch: expected \(expected.algorithm.rawValue):\(expected.hex), got \(expected.algorithm.rawValue):\(Hex.encode(actual))")
        }
    }

    /// Fails early, before any traffic, when the result could not be saved.
    private func checkDestination() throws {
        guard FilePaths.directoryIsWritable(for: destination) else {
            throw SpateError.localIO("cannot write to directory \(FilePaths.directory(of: destination))")
        }
        if FilePaths.exists(destination) && !options.overwrite {
            throw SpateError.localIO("\(destination) already exists; use --force to replace it")
        }
    }
}

/// The mode a new file gets: 0666 minus the process umask, like any file a program creates.
enum FileMode {
    static let newFileMode: mode_t = {
        let mask = umask(0o022)
        umask(mask)
        return 0o666 & ~mask
    }()
}
