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
        if options.nameFromServer {
            guard FilePaths.isDirectory(destination), FilePaths.directoryIsWritable(for: destination + "/x") else {
                throw SpateError.localIO("cannot write to directory \(destination)")
            }
        } else {
            try checkDestination(destination)
        }
        var remote = try await resolver.resolve()
        let path = try outputPath(for: remote)
        var restarts = 0
        while true {
            do {
                let (bytes, connections, tail) = try await attempt(remote, path: path)
                let stats = context.snapshot
                return DownloadResult(
                    path: path, bytes: bytes, elapsed: ContinuousClock.now - started,
                    verifiedChecksum: options.checksum, verificationTail: tail, connections: connections,
                    requests: stats.requests, retries: stats.retries)
            } catch let error as SpateError where error.kind == .remoteChanged && options.restartOnChange
                && restarts < DownloadOptions.maximumRestarts {
                restarts += 1
                emit(.notice("\(error.message); starting over (\(restarts) of \(DownloadOptions.maximumRestarts))"))
                counters.bytesWritten.store(0, ordering: .relaxed)
                remote = try await resolver.resolve()
            }
        }
    }

    /// The output path: the destination, or with `nameFromServer` a name the server proposes
    /// (Content-Disposition, else the URL's last segment), sanitized, inside the destination.
    private func outputPath(for remote: RemoteFile) throws -> String {
        guard options.nameFromServer else { return destination }
        let proposed = ContentDisposition.fileName(from: remote.contentDisposition)
        let name = proposed.map { FilePaths.sanitizedFileName($0) } ?? FilePaths.defaultFileName(for: context.url)
        let path = (destination.hasSuffix("/") ? destination : destination + "/") + name
        // CVE-2020-8177: a name chosen by the server never replaces a file, even with --force.
        if FilePaths.exists(path) {
            throw SpateError.localIO("the server named the file \(name), and \(path) already exists; spate never replaces a file named by the server")
        }
        return path
    }

    /// One pass over the file as `remote` describes it, into `path`. Returns the size and
    /// connections used.
    private func attempt(_ remote: RemoteFile, path destination: String) async throws -> (Int64, Int, Duration?) {
        // With --range, output offset 0 is remote offset `remoteOffset`.
        var size = remote.size
        var remoteOffset: Int64 = 0
        if let partial = options.byteRange {
            guard remote.acceptsRanges, let full = remote.size else {
                throw SpateError.invalidResponse("--range needs a server that supports byte ranges, and \(remote.url.redacted) does not")
            }
            let selected = try partial.clamped(toSize: full)
            size = selected.count
            remoteOffset = selected.start
        }
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

        let journalHeader = options.journal && segmented
            ? ResumePlanner.header(url: context.url, remote: remote, range: options.byteRange, size: size ?? 0) : nil
        let (file, resumed) = try openOutput(destination, journalHeader: journalHeader, size: size)
        var finished = false
        var keepForResume = false
        var journal: Journal?
        defer {
            if !finished {
                if keepForResume, let journal {
                    journal.close()
                    file.close()
                } else {
                    journal?.remove()
                    file.discard()
                }
            }
        }
        // Created after the cleanup above is registered: a journal that cannot be written must
        // not leave an orphaned partial file behind.
        journal = try journalHeader.map { header throws(SpateError) in
            try Journal(path: Journal.path(for: destination), header: header, records: resumed, data: file,
                        commitInterval: options.journalCommitInterval)
        }
        let writer = FileWriter(file: file, buffers: connections + 4, bufferBytes: options.stagingBufferBytes,
                                computesCRC: journal != nil)
        defer { writer.stop() }  // runs before the defer above: every write lands before the journal's last commit
        let hasher = options.checksum.map { WatermarkHasher(fd: file.fd, path: file.partPath, algorithm: $0.algorithm) }
        defer { hasher?.stop() }

        do {
            let totalBytes: Int64
            var used = connections
            if segmented {
                try file.preallocate(size!)
                let scheduler = RangeScheduler(context: context, resolver: resolver, size: size!, remoteOffset: remoteOffset,
                                               alreadyDone: HashedRangeList(records: resumed).covered, writer: writer,
                                               hasher: hasher, journal: journal, sizer: sizer, workers: connections)
                journal?.reportInFlightProgress { [scheduler] in scheduler.inFlightWritten() }
                try await scheduler.run()
                used = scheduler.peakConnections.load(ordering: .relaxed)
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
            var tail: Duration?
            if let hasher {
                let lastByte = ContinuousClock.now
                try await verify(hasher, size: totalBytes)
                tail = ContinuousClock.now - lastByte
            }

            // The journal stops (its last commit needs the data descriptor) before the file is
            // closed and renamed; it is deleted once the final name exists.
            journal?.close()
            try file.finish(mode: FileMode.newFileMode, replaceExisting: options.overwrite)
            journal?.remove()
            finished = true
            return (totalBytes, used, tail)
        } catch let error as SpateError {
            keepForResume = Self.resumable(error)
            throw error
        } catch {
            keepForResume = true  // cancellation
            throw error
        }
    }

    /// Failures after which the partial file and journal are worth keeping for a resume.
    /// Not after a checksum mismatch or a remote change: that data is wrong or stale.
    static func resumable(_ error: SpateError) -> Bool {
        switch error.kind {
        case .checksumMismatch, .remoteChanged: false
        default: true
        }
    }

    /// Creates the partial file, or opens it to resume, following `ResumePlanner`.
    /// Returns the file and the verified records already on disk.
    private func openOutput(_ destination: String, journalHeader: JournalCodec.Header?, size: Int64?) throws(SpateError) -> (OutputFile, [HashedRange]) {
        let partPath = OutputFile.partPath(for: destination)
        let journalPath = Journal.path(for: destination)
        guard options.journal else {
            return (try OutputFile(creatingFor: destination, replacePartial: options.overwrite), [])
        }
        var found = ResumePlanner.Found(partExists: FilePaths.exists(partPath), journal: nil, journalError: nil)
        do { found.journal = try Journal.load(path: journalPath) } catch { found.journalError = error }
        let decision = ResumePlanner.decide(found: found, expected: journalHeader, partPath: partPath, journalPath: journalPath,
                                            overwrite: options.overwrite, restartOnChange: options.restartOnChange)
        switch decision {
        case .refuse(let error):
            throw error
        case .fresh:
            if found.journal != nil || found.journalError != nil || options.overwrite { try OutputFile.removeLeftovers(for: destination) }
            return (try OutputFile(creatingFor: destination, replacePartial: options.overwrite), [])
        case .restart(let why):
            emit(.notice(why))
            try OutputFile.removeLeftovers(for: destination)
            return (try OutputFile(creatingFor: destination, replacePartial: true), [])
        case .resume(let records):
            let file = try OutputFile(resumingFor: destination, size: size ?? 0)
            let verified = options.verifyResume ? file.verify(records) : records
            let done = HashedRangeList(records: verified).covered.count
            counters.bytesAlreadyDone.store(done, ordering: .relaxed)
            var text = "resuming: \(ByteSize.format(done)) of \(ByteSize.format(size ?? 0)) already on disk"
            if verified.count < records.count {
                text += "; \(records.count - verified.count) recorded range(s) failed verification and will be fetched again"
            }
            emit(.notice(text))
            return (file, verified)
        }
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
    private func checkDestination(_ destination: String) throws {
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
