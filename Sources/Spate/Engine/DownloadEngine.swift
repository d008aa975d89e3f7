import Glibc

/// One download from probe to final name, inside a session: probe → plan → open the
/// resources → fetch (range workers, or one stream) → complete (digest, fsync, rename).
/// Everything it starts ends inside `run()`; `DownloadResources` closes what it opened, in
/// order, on every path.
final class DownloadEngine: Sendable {
    let destination: String
    let url: RemoteURL
    let options: DownloadOptions
    let counters = DownloadCounters()
    let emit: @Sendable (DownloadEvent) -> Void
    private let session: DownloadSession
    private let requests: RequestBuilder
    private let transport: DownloadTransport
    private let resolver: RemoteResolver
    /// The root of this download's seeded randomness (retry jitter).
    private let seed: UInt64

    /// The remote size once the probe knows it (for progress reports).
    var knownSize: Int64? {
        let size = counters.knownSize.load(ordering: .relaxed)
        return size >= 0 ? size : nil
    }

    /// - Parameter priority: the download's place in the session's queue for connection slots
    ///   (lower first; see `DownloadTransport.priority`).
    /// - Parameter prefetched: the probe's answer, when a batch's small-file fetch already has it.
    init(url: RemoteURL, destination: String, options: DownloadOptions, session: DownloadSession, priority: UInt64 = 0,
         prefetched: RemoteResolver.Prefetched? = nil, emit: @escaping @Sendable (DownloadEvent) -> Void) {
        self.url = url
        self.destination = destination
        self.options = options
        self.emit = emit
        self.session = session
        self.seed = options.randomSeed ?? UInt64.random(in: .min ... .max)
        requests = RequestBuilder(url: url, options: options)
        transport = DownloadTransport(session: session, counters: counters, emit: emit, priority: priority)
        resolver = RemoteResolver(requests: requests, transport: transport, seed: SplitMix64.mix(seed &+ 1), prefetched: prefetched,
                                  handsOver: true)
        if let prefetched {
            counters.requests.store(prefetched.requests, ordering: .relaxed)
            if let first = prefetched.timeToFirstByte { counters.timeToFirstByteNanos.store(first.wholeNanoseconds, ordering: .relaxed) }
        }
    }

    func run() async throws -> DownloadResult {
        let started = session.clock.now
        if options.nameFromServer {
            guard FilePaths.isDirectory(destination), FilePaths.directoryIsWritable(for: destination + "/x") else {
                throw SpateError.localIO("cannot write to directory \(destination)")
            }
        } else if !options.destinationPrepared && options.output.isFile {
            try checkDestination(destination)
        }
        var remote = try await resolver.resolve()
        // Taken at once, so that every path that does not stream from it lets it go (which
        // ends the paused transfer and gives its slot back).
        var handover = resolver.takeHandover()
        let path = try outputPath(for: remote)
        var restarts = 0
        while true {
            do {
                let expected = try Self.expectedDigest(remote, options: options, emit: emit)
                let taken = handover
                handover = nil
                let (bytes, connections, tail) = try await attempt(remote, path: path, expected: expected?.checksum, handover: taken)
                let firstByte = counters.timeToFirstByteNanos.load(ordering: .relaxed)
                return DownloadResult(
                    path: path, bytes: bytes, elapsed: session.clock.now - started,
                    verifiedChecksum: expected?.checksum, checksumSource: expected?.source, verificationTail: tail,
                    connections: connections,
                    requests: counters.requests.load(ordering: .relaxed), retries: counters.retries.load(ordering: .relaxed),
                    timeToFirstByte: firstByte >= 0 ? .nanoseconds(firstByte) : nil,
                    bytesResumed: min(bytes, counters.bytesAlreadyDone.load(ordering: .relaxed)))
            } catch is RangeWorkers.RangesIgnored {
                // The ranges' partial file is gone (`attempt`); one stream writes from byte 0.
                emit(.notice("the server answers range requests with the whole file (200 instead of 206): starting over with one connection"))
                counters.bytesWritten.store(0, ordering: .relaxed)
                remote.acceptsRanges = false
            } catch let error as SpateError where error.kind == .remoteChanged && options.restartOnChange
                && options.output.isFile && restarts < DownloadOptions.maximumRestarts {
                // (A stream cannot start over: its bytes are already with the reader.)
                restarts += 1
                emit(.notice("\(error.message); starting over (\(restarts) of \(DownloadOptions.maximumRestarts))"))
                counters.bytesWritten.store(0, ordering: .relaxed)
                remote = try await resolver.resolve()
                handover = resolver.takeHandover()
            }
        }
    }

    /// The digest to verify: `--checksum`, else the best one the server published. A server
    /// digest of the same algorithm that disagrees with `--checksum` stops the download before
    /// any byte is fetched (one of them is wrong; the bytes cannot satisfy both).
    static func expectedDigest(_ remote: RemoteFile, options: DownloadOptions,
                               emit: (DownloadEvent) -> Void) throws(SpateError) -> ServerDigest? {
        for notice in remote.digestNotices { emit(.notice(notice)) }
        if let given = options.checksum {
            if options.byteRange == nil, let other = remote.serverDigests.first(where: { $0.checksum.algorithm == given.algorithm }),
               other.checksum != given {
                throw SpateError(.checksumMismatch, "the server's \(other.source) says \(other.checksum.algorithm.rawValue):\(other.checksum.hex), but --checksum says \(given.hex); nothing was downloaded")
            }
            return ServerDigest(checksum: given, source: "--checksum")
        }
        // A server's digest covers the whole file, not the part `--range` asks for.
        guard options.byteRange == nil, let digest = remote.serverDigests.first else { return nil }
        emit(.notice("verifying the server's \(digest.source) (\(digest.checksum.algorithm.rawValue)) while downloading"))
        return digest
    }

    /// The output path: the destination, or with `nameFromServer` a name the server proposes
    /// (Content-Disposition, else the URL's last segment), sanitized, inside the destination.
    private func outputPath(for remote: RemoteFile) throws -> String {
        guard options.nameFromServer else { return destination }
        let proposed = ContentDisposition.fileName(from: remote.contentDisposition)
        let name = proposed.map { FilePaths.sanitizedFileName($0) } ?? FilePaths.defaultFileName(for: url)
        let path = (destination.hasSuffix("/") ? destination : destination + "/") + name
        // CVE-2020-8177: a name chosen by the server never replaces a file, even with --force.
        if FilePaths.exists(path) {
            throw SpateError.localIO("the server named the file \(name), and \(path) already exists; spate never replaces a file named by the server")
        }
        return path
    }

    /// What one pass over the file fetches.
    private struct Plan {
        /// Output bytes (the selected part with `--range`), when known.
        var size: Int64?
        /// Output offset 0 is this remote offset.
        var remoteOffset: Int64 = 0
        var segmented: Bool
        var sizer: RequestSizer
        /// Connections worth opening.
        var connections: Int

        /// What `.started` says of it.
        func announced(_ remote: RemoteFile) -> DownloadPlan {
            DownloadPlan(url: remote.url.redacted, totalBytes: size, acceptsRanges: remote.acceptsRanges,
                         connections: connections, requestBytes: segmented ? sizer.baseBytes : nil)
        }
    }

    /// What `.started` says of a small file that arrived whole in its probe's reply (a batch's
    /// `SmallFileFetch`), as the engine would say it.
    static func announcedPlan(_ remote: RemoteFile, options: DownloadOptions) throws(SpateError) -> DownloadPlan {
        try plan(remote, options: options).announced(remote)
    }

    private static func plan(_ remote: RemoteFile, options: DownloadOptions) throws(SpateError) -> Plan {
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
        let segmented = remote.acceptsRanges && (size ?? 0) > 0
        let sizer = RequestSizer(fileSize: size ?? 0, connections: options.connections, fixedBytes: options.chunkBytes)
        return Plan(size: size, remoteOffset: remoteOffset, segmented: segmented, sizer: sizer,
                    connections: segmented ? sizer.usefulConnections(fileSize: size!) : 1)
    }

    /// One pass over the file as `remote` describes it, into `path`. Returns the size, the
    /// most connections used, and how long the digest took after the last byte.
    /// - Parameter handover: the probe's reply, paused, when it is the whole file from a server
    ///   without ranges (`RemoteResolver.takeHandover`): the stream goes on with it; any other
    ///   path lets it go.
    private func attempt(_ remote: RemoteFile, path: String, expected checksum: Checksum?,
                         handover: TransferHandover?) async throws -> (Int64, Int, Duration?) {
        let plan = try Self.plan(remote, options: options)
        counters.knownSize.store(plan.size ?? -1, ordering: .relaxed)
        emit(.started(plan.announced(remote)))
        if let body = resolver.takeWholeBody(), let size = plan.size, Int64(body.count) == size {
            if options.output.isFile {
                try await saveWhole(body, path: path, checksum: checksum)
            } else {
                try streamWhole(body, path: path, checksum: checksum)
            }
            return (size, 1, nil)
        }
        if !remote.acceptsRanges && (plan.size ?? 1) > 0 {
            emit(.notice("the server does not support byte ranges: downloading with one connection"))
        }
        if !plan.segmented && !options.mirrors.isEmpty {
            emit(.notice("mirrors serve byte ranges of a file of known size; this one is fetched from the URL alone"))
        }
        if plan.segmented && remote.ifRangeValidator == nil && checksum == nil {
            // Nothing ties the ranges to one version of the file: say so once.
            emit(.notice("no validator (no ETag or Last-Modified): changes during the download cannot be detected; use --checksum"))
        }
        let header = options.journal && plan.segmented && options.output.isFile
            ? ResumePlanner.header(url: url, remote: remote, range: options.byteRange, size: plan.size ?? 0) : nil
        // An ordered stream of ranges: a window no larger than the file.
        var streamWindow: Int64?
        if case .stream(_, let window) = options.output, plan.segmented, let size = plan.size {
            streamWindow = min(window, max(size, DownloadOutput.minimumWindow))
        }
        let identity = ObjectIdentifier(self)
        let resources = try DownloadResources.open(path: path, header: header, remote: remote, size: plan.size, options: options,
                                                   checksum: checksum,
                                                   session: session, identity: identity, streamWindow: streamWindow, emit: emit)
        counters.bytesAlreadyDone.store(resources.alreadyDone.count, ordering: .relaxed)
        do {
            let total: Int64
            var used = plan.connections
            if plan.segmented, let size = plan.size {
                if options.output.isFile { try resources.file.preallocate(size) }
                let settings = RangeSchedule.Settings(
                    workStealing: options.workStealing, tailHedging: options.tailHedging, sizer: plan.sizer, retry: options.retry,
                    maximumWorkers: plan.connections, selfTuning: options.selfTuning, initialWorkers: options.initialConnections,
                    windowBytes: streamWindow, initialReplyWait: resolver.probeReplyWait)
                let schedule = RangeSchedule(size: size, alreadyDone: resources.alreadyDone,
                                             settings: settings, seed: SplitMix64.mix(seed &+ 2))
                let sources = SourceSet(SourceSet.Source(resolver: resolver, requests: requests))
                let workers = RangeWorkers(schedule: schedule, parts: RangeWorkers.Parts(
                    transport: transport, sources: sources, output: resources.output,
                    journal: resources.journal, hasher: resources.hasher, stream: resources.file.stream,
                    remoteOffset: plan.remoteOffset, identity: identity,
                    canStartOverAsStream: options.output.isFile && options.byteRange == nil && options.mirrors.isEmpty))
                resources.file.stream?.onProgress { [workers] streamed, failure in
                    workers.streamProgressed(streamed, failure: failure)
                }
                if options.mirrors.isEmpty {
                    try await workers.run()
                } else {
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask { [self] in await addMirrors(to: sources, remote, checksum: checksum) }
                        try await workers.run()
                        group.cancelAll()  // probes still waiting have nothing left to fetch
                    }
                }
                used = workers.peakWorkers
                total = size
            } else if plan.size == 0 {
                total = 0
            } else {
                if let size = plan.size, options.output.isFile { try resources.file.preallocate(size) }
                session.setConnections(1, for: identity)
                total = try await StreamFetcher(requests: requests, transport: transport, remote: remote, output: resources.output,
                                                seed: SplitMix64.mix(seed &+ 3), handover: handover).run()
                resources.hasher?.advance(to: total)
            }
            if checksum != nil { emit(.verifying) }
            let tail = try await resources.complete(size: total, truncate: !plan.segmented && plan.size != 0,
                                                    checksum: checksum, overwrite: options.overwrite,
                                                    mark: options.byteRange == nil && options.output.isFile ? SavedMark(size: total, url: url) : nil,
                                                    clock: session.clock)
            return (total, used, tail)
        } catch let error as SpateError {
            resources.close(keepForResume: Self.resumable(error))
            if error.kind == .checksumMismatch && !options.mirrors.isEmpty {
                // Any source may have served the bad bytes, and a rerun would mix them again.
                throw SpateError(.checksumMismatch, error.message + "; mirrors served part of the bytes: run without them to check the URL alone")
            }
            throw error
        } catch let error as RangeWorkers.RangesIgnored {
            resources.close(keepForResume: false)  // the stream that follows writes every byte
            throw error
        } catch {
            resources.close(keepForResume: true)  // cancellation
            throw error
        }
    }

    /// Probes every mirror at once and adds each that describes the same file
    /// (`SourceSet.mismatch`) as its probe succeeds; a mirror that fails its probe or describes
    /// another file is left out with a notice. Runs beside the workers: the URL's source works
    /// from the start, whatever the mirrors take.
    private func addMirrors(to sources: SourceSet, _ remote: RemoteFile, checksum: Checksum?) async {
        // A checksum lets mirrors with other validators in only when it checks every byte
        // before anyone sees them: a file, and a cryptographic digest.
        let trusted = checksum.flatMap { options.output.isFile && $0.algorithm.isCryptographic ? $0 : nil }
        await withTaskGroup(of: Void.self) { group in
            for (i, mirror) in options.mirrors.enumerated() {
                group.addTask { [self] in
                    let builder = requests.forMirror(mirror)
                    let resolver = RemoteResolver(requests: builder, transport: transport, seed: SplitMix64.mix(seed &+ 16 &+ UInt64(i)))
                    do {
                        let found = try await resolver.resolve()
                        if let reason = SourceSet.mismatch(primary: remote, mirror: found, checksum: trusted) {
                            emit(.notice("not using the mirror \(mirror.redacted): \(reason)"))
                            return
                        }
                        sources.add(SourceSet.Source(resolver: resolver, requests: builder))
                        let origin = found.url.origin
                        emit(.notice("also fetching from the mirror \(origin.host):\(origin.port) (\(sources.activeCount) sources)"))
                    } catch let error as SpateError {
                        emit(.notice("not using the mirror \(mirror.redacted): \(error.message)"))
                    } catch {
                        // Cancelled: the download is done or stopping.
                    }
                }
            }
        }
    }

    /// A small file that arrived whole in the probe's reply: checked against the checksum in
    /// memory, written with one `pwrite`, marked, and made durable with the session's other
    /// small files (`GroupPublisher`). No journal: there is nothing to resume in one request.
    private func saveWhole(_ body: [UInt8], path: String, checksum: Checksum?) async throws {
        if let expected = checksum {
            emit(.verifying)
            try expected.verify(body)
        }
        // Marked with its final note at creation (before its bytes: a leftover is never an
        // unmarked non-empty file).
        let mark = SavedMark(size: Int64(body.count), url: url)
        // In a batch that found nothing there, without --force: a file with no name until it
        // is durable (nothing to lock or check, nothing left by a kill). Else, or where there
        // is none: a partial file; a leftover one without a journal (a run killed mid-save)
        // is replaced in a batch, and refused elsewhere like any existing partial file.
        let file: OutputFile
        if options.noPartialFile && !options.overwrite, let unnamed = OutputFile(unnamedFor: path, mode: FileMode.newFileMode, mark: mark) {
            file = unnamed
        } else {
            file = try OutputFile(creatingFor: path, replacing: options.partialFileReplace, mark: mark)
        }
        do {
            let code = body.withUnsafeBytes { file.write($0, at: 0) }
            if code != 0 { throw Syscall.fail("write", path: file.partPath, errno: code) }
            counters.bytesWritten.add(Int64(body.count), ordering: .relaxed)
            try await session.publisher.publish(file, mode: FileMode.newFileMode, replaceExisting: options.overwrite)
        } catch {
            file.discard()
            throw error
        }
    }

    /// A small file that arrived whole, to an ordered stream (checked first: a stream cannot
    /// take bytes back) or a discard.
    private func streamWhole(_ body: [UInt8], path: String, checksum: Checksum?) throws {
        if let expected = checksum {
            emit(.verifying)
            try expected.verify(body, suffix: "; nothing was written to \(path)")
        }
        if case .stream(let fd, _) = options.output {
            let code = body.withUnsafeBytes { StreamOutput.writeAll(fd, $0) { Task.isCancelled } }
            if code == EPIPE { throw StreamOutput.readerStopped(path) }
            if code != 0 { throw Syscall.fail("write to", path: path, errno: code) }
        }
        counters.bytesWritten.add(Int64(body.count), ordering: .relaxed)
    }

    /// Failures after which the partial file and journal are worth keeping for a resume.
    /// Not after a checksum mismatch or a remote change: that data is wrong or stale.
    static func resumable(_ error: SpateError) -> Bool {
        switch error.kind {
        case .checksumMismatch, .remoteChanged: false
        default: true
        }
    }

    /// Fails early, before any traffic, when the result could not be saved.
    private func checkDestination(_ destination: String) throws {
        // No file system takes a longer name: say so now, not after every byte has arrived.
        if let name = destination.split(separator: "/").last, name.utf8.count > 255 {
            throw SpateError(.usage, "the file name \"\(name.prefix(40))…\" is longer than 255 bytes")
        }
        guard FilePaths.directoryIsWritable(for: destination) else {
            throw SpateError.localIO("cannot write to directory \(FilePaths.directory(of: destination))")
        }
        if let refusal = OutputFile.nonRegularRefusal(destination) { throw refusal }
        // Another run writing this output now: fail at once, before any request (`OutputLock`).
        if let conflict = OutputLock.conflict(at: OutputFile.partPath(for: destination)) { throw conflict }
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
