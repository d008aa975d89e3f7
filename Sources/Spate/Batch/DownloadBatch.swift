/// Many files in one run, over one `DownloadSession`: the entries of a manifest (or any
/// sequence of `ManifestEntry`) are pulled as there is room, at most `maxFilesInFlight` at
/// once, and share the session's connection budgets (global and per host, probes included).
///
/// - Files in flight come first: each file's requests queue for connection slots with the
///   file's position as priority, so a later file gets a connection only when the earlier ones
///   have no request waiting.
/// - A small file (at most `DownloadOptions.wholeFileBytes`) is one GET, and is made durable
///   together with the other small files that finished meanwhile (`GroupPublisher`).
/// - A rerun skips complete files (`BatchSkipCheck`: spate's mark, the size, the checksum when
///   given) without a request, and resumes partial ones from their journals.
/// - A failing file never stops the others, unless `failFast`.
///
/// ```swift
/// var options = BatchOptions()
/// options.directory = "data"
/// let manifest = try Manifest(path: "files.txt")
/// try manifest.validate()
/// let batch = try DownloadBatch(options: options) { event in print(event) }
/// let summary = try await batch.run(manifest.entries())
/// ```
public final class DownloadBatch: Sendable {
    public let options: BatchOptions
    private let emit: @Sendable (BatchEvent) -> Void

    /// - Parameter events: receives every event, synchronously and from many threads; it must
    ///   be quick and thread-safe. Nothing is dropped.
    public init(options: BatchOptions, events: @escaping @Sendable (BatchEvent) -> Void) throws(SpateError) {
        try options.validate()
        self.options = options
        self.emit = events
    }

    /// How one file ended, or that a small-file fetch hands it to a `Download` (an enum
    /// without a typed-throws `Result`: a task group's result of that shape crashed in release
    /// builds with Swift 6.3).
    private enum Outcome: Sendable {
        /// A small file left the network for the publisher: it waits for its flushes.
        case written
        case saved(BatchFile, DownloadResult, from: Source)
        case failed(BatchFile, SpateError, from: Source)
        case fallBack(SmallFileFetch.Fetch, RemoteResolver.Prefetched?)
    }

    /// Where a file was when it ended: what it counted against.
    private enum Source {
        /// A `Download` (in flight).
        case download
        /// A small-file fetch before it was written (in flight).
        case fetch
        /// A small file written and waiting for its flushes (saving).
        case written
    }

    private enum Prepared {
        case run(Download)
        /// A fresh destination: the small-file path first (`SmallFileFetch`).
        case fetch(SmallFileFetch.Fetch)
        case skipped(Int64, note: String?)
        case failed(SpateError)
    }

    /// Runs every entry to its end. Throws only when the batch cannot start (the base
    /// directory); each file's failure is in the summary (and its `failed` event).
    public func run<Entries: IteratorProtocol>(_ entries: Entries) async throws(SpateError) -> BatchSummary
    where Entries.Element == ManifestEntry {
        let directory = try BatchDirectory(base: options.directory)
        let session = try DownloadSession(limits: options.limits, clock: SystemClock(),
                                          stagingBufferBytes: options.download.stagingBufferBytes, trace: options.download.trace)
        defer { session.shutdown() }
        let started = ContinuousClock.now
        let limit = options.maxFilesInFlight ?? options.automaticFilesInFlight
        let savingLimit = BatchOptions.maxFilesSaving
        var summary = BatchSummary()
        var iterator = entries
        var index = 0
        var stop = false
        // Each file's jitter seed derives from one drawn here (one getrandom per batch, not
        // per file), or from the seed the options give (replayable).
        let seedBase = options.download.randomSeed ?? UInt64.random(in: .min ... .max)
        // Files end on many threads (a download's task, the loop and publisher threads for
        // small files); this task takes what ended in bulk.
        let endings = Mailbox<Outcome>()
        let failFast = options.failFast
        let fetcher = SmallFileFetch(session: session, emit: emit) { fetch, ending in
            switch ending {
            case .written: endings.post(.written)
            // (Only a written file is saved.)
            case .saved(let result): endings.post(.saved(fetch.file, result, from: .written))
            case .failed(let error, let afterWritten):
                endings.post(.failed(fetch.file, error, from: afterWritten ? .written : .fetch), urgent: failFast)
            case .cancelled:
                endings.post(.failed(fetch.file, SpateError(.cancelled, "download cancelled"), from: .fetch))
            // (A big file: its download starts at once, not after the next few small files.)
            case .fallBack(let prefetched): endings.post(.fallBack(fetch, prefetched), urgent: true)
            }
        }
        let emit = self.emit
        // Discarding: a finished download's task is freed at once (memory must not grow with
        // the list), and its outcome comes through `endings`.
        await withDiscardingTaskGroup { group in
            func launch(_ download: Download, _ file: BatchFile) {
                group.addTask {
                    // Urgent: the batch's wake-ups are counted in small files, which a download's
                    // end must not wait for.
                    do throws(SpateError) {
                        endings.post(.saved(file, try await download.run(), from: .download), urgent: true)
                    } catch {
                        endings.post(.failed(file, error, from: .download), urgent: true)
                    }
                }
            }
            func stopAll() {
                stop = true
                group.cancelAll()
                fetcher.cancelAll()
            }
            // Files on the network or on their way to it (`limit`), and small files written and
            // waiting for their flushes (`savingLimit`: a descriptor each, no bytes). Two counts,
            // because a file waits for two flushes: counted among the files in flight, the
            // files waiting for the disk kept the connections idle (Little's law: files in
            // flight = files per second × time per file). 10,000 small files on a fresh ext4:
            // 1.67-2.07 s with the two counts, 2.42-2.80 s with one.
            var inFlight = 0
            var downloads = 0  // of `inFlight`
            var saving = 0
            func ended(_ source: Source) {
                switch source {
                case .download:
                    inFlight -= 1
                    downloads -= 1
                case .fetch:
                    inFlight -= 1
                case .written:
                    saving -= 1
                }
            }
            var cancelSeen = false
            while true {
                while !stop, inFlight < limit, saving < savingLimit, let entry = iterator.next() {
                    if Task.isCancelled {
                        stop = true
                        break
                    }
                    let (file, prepared) = prepare(entry, index: index, seedBase: seedBase, directory: directory, session: session)
                    index += 1
                    emit(.queued(file))
                    switch prepared {
                    case .skipped(let bytes, let note):
                        summary.skipped += 1
                        if let note { emit(.file(file, .notice(note))) }
                        emit(.skipped(file, bytes: bytes))
                    case .failed(let error):
                        record(error, for: file, in: &summary)
                        if options.failFast { stopAll() }
                    case .run(let download):
                        inFlight += 1
                        downloads += 1
                        launch(download, file)
                    case .fetch(let fetch):
                        inFlight += 1
                        fetcher.start(fetch)
                    }
                }
                if inFlight == 0 && saving == 0 { break }
                if Task.isCancelled && !cancelSeen {
                    // Every file in flight still ends (as cancelled): wait for them.
                    cancelSeen = true
                    stopAll()
                }
                // Woken once per a quarter of the small files in flight or saving (at most 64),
                // not per file: the small files waiting for a connection keep the connections
                // busy meanwhile (a wake-up per file doubled the context switches of a batch of
                // small files). Downloads are not counted (one may take hours); their ends are
                // urgent, as are a big file's hand-over and a failure that stops the batch.
                let wakeAfter = min(64, max(1, (inFlight - downloads + saving) / 4))
                for outcome in await endings.next(atLeast: wakeAfter, wakingOnCancel: !cancelSeen) {
                    switch outcome {
                    case .written:
                        inFlight -= 1
                        saving += 1
                    case .fallBack(let fetch, let prefetched):
                        if stop {
                            inFlight -= 1
                            record(SpateError(.cancelled, "download cancelled"), for: fetch.file, in: &summary)
                            continue
                        }
                        let forwarded = fetch.file
                        do throws(SpateError) {
                            launch(try Download(url: fetch.url, to: fetch.file.path, options: fetch.options, session: session,
                                                priority: fetch.priority, prefetched: prefetched,
                                                observer: { event in emit(.file(forwarded, event)) }), fetch.file)
                            downloads += 1
                        } catch {
                            inFlight -= 1
                            record(error, for: fetch.file, in: &summary)
                        }
                    case .saved(_, let result, let source):
                        ended(source)
                        summary.succeeded += 1
                        summary.bytes += result.bytes - result.bytesResumed  // this run's, not a resume's earlier bytes
                    case .failed(let file, let error, let source):
                        ended(source)
                        record(error, for: file, in: &summary)
                        if options.failFast && error.kind != .cancelled && !stop { stopAll() }
                    }
                }
            }
        }
        summary.stoppedEarly = stop || Task.isCancelled
        summary.elapsed = ContinuousClock.now - started
        return summary
    }

    private func record(_ error: SpateError, for file: BatchFile, in summary: inout BatchSummary) {
        emit(.failed(file, error))
        guard error.kind != .cancelled else {
            summary.cancelled += 1
            return
        }
        summary.recordFailure(file, error)
    }

    /// The file's path (directories created), the skip check, and its `Download`.
    private func prepare(_ entry: ManifestEntry, index: Int, seedBase: UInt64, directory: BatchDirectory,
                         session: DownloadSession) -> (BatchFile, Prepared) {
        let parsed = Result { () throws(SpateError) -> RemoteURL in
            if let remote = entry.remote { return remote }
            return try RemoteURL(entry.url)
        }
        let redacted = (try? parsed.get())?.redacted ?? "(invalid URL)"
        var file = BatchFile(index: index, line: entry.line, url: redacted, path: directory.base + "/" + entry.destination)
        do {
            let url = try parsed.get()
            let prepared = try directory.prepare(entry.destination)
            let path = prepared.path
            file = BatchFile(index: index, line: entry.line, url: redacted, path: path)
            let found: DownloadOptions.BatchFound
            // In a directory this run just created there is nothing to look for (three
            // `stat`s of missing names per file, a tenth of a batch of small files' CPU).
            let verdict = prepared.inNewDirectory
                ? .fetchNew : BatchSkipCheck.check(path: path, url: url, checksum: entry.checksum, overwrite: options.download.overwrite)
            switch verdict {
            case .complete(let bytes, let note):
                return (file, .skipped(bytes, note: note))
            case .refuse(let message):
                return (file, .failed(.localIO(message)))
            case .fetch:
                found = .noJournal
            case .fetchNew:
                found = .nothing
            case .resume:
                found = .journal
            }
            var fileOptions = options.download
            fileOptions.checksum = entry.checksum
            fileOptions.headers += entry.headers
            fileOptions.mirrors = entry.mirrors
            fileOptions.batchFound = found
            // A journal means the file was bigger than one request: probe one byte, so the
            // bytes already on disk are not sent again in the probe's reply.
            if found == .journal { fileOptions.wholeFileBytes = 0 }
            fileOptions.connections = min(DownloadOptions.maximumConnections, session.limits.maxConnections,
                                          session.limits.maxConnectionsPerHost)
            fileOptions.randomSeed = SplitMix64.mix(seedBase &+ UInt64(index))
            if SmallFileFetch.takes(fileOptions) {
                return (file, .fetch(SmallFileFetch.Fetch(file: file, url: url, options: fileOptions, priority: UInt64(index),
                                                          now: session.clock.now)))
            }
            let emit = self.emit
            let forwarded = file
            let download = try Download(url: url, to: path, options: fileOptions, session: session,
                                        priority: UInt64(index), observer: { event in emit(.file(forwarded, event)) })
            return (file, .run(download))
        } catch {
            return (file, .failed(error))
        }
    }
}
