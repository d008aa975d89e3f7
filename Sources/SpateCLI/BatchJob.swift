import Spate

/// `spate -i FILE` or `spate URL URL...`: many files into `--dir`, over one session.
///
/// The manifest is checked from its first line to its last before the first request (a bad
/// line is exit 2 with its number), then read again lazily as files finish.
struct BatchJob: Sendable {
    let manifest: Manifest?
    /// URLs from the command line, as entries (checked, shard applied).
    let commandLine: [ManifestEntry]
    let options: BatchOptions
    let quiet: Bool
    let log: EventLog?

    init(command: SpateCommand, options download: DownloadOptions, log: EventLog?) throws(SpateError) {
        try Self.refuseSingleFileOptions(command)
        let shard = try command.shard.map { text throws(SpateError) in try ManifestShard(parsing: text) } ?? .all
        var entries: [ManifestEntry] = []
        var seen: [String: String] = [:]
        for url in command.urls {
            let remote = try RemoteURL(url)
            let destination = try BatchPath.normalize(FilePaths.defaultFileName(for: remote))
            if let other = seen[destination] {
                if other == url { continue }
                throw SpateError(.usage, "two URLs on the command line would both be saved as \(destination); list them in a manifest with a DEST each")
            }
            seen[destination] = url
            if shard.contains(destination: destination) {
                entries.append(ManifestEntry(line: 0, url: url, destination: destination))
            }
        }
        commandLine = entries
        if let input = command.inputFile {
            let manifest = try Manifest(path: input, shard: shard)
            try manifest.validate(alongside: entries)
            self.manifest = manifest
        } else {
            manifest = nil
        }
        var options = BatchOptions()
        options.directory = command.dir ?? "."
        options.limits = DownloadSession.Limits(maxConnections: command.connections, maxConnectionsPerHost: command.maxPerHost ?? DownloadSession.Limits.defaultMaxConnectionsPerHost,
                                                maxBytesPerSecond: download.maxBytesPerSecond)
        options.maxFilesInFlight = command.maxFiles
        options.failFast = command.failFast
        options.download = download
        options.download.wholeFileBytes = DownloadOptions.wholeFileDefault
        options.download.progressInterval = .milliseconds(250)
        try options.validate()
        self.options = options
        quiet = command.quiet
        self.log = log
    }

    /// Options that name one file make no sense for many.
    private static func refuseSingleFileOptions(_ command: SpateCommand) throws(SpateError) {
        let refused: [(Bool, String)] = [
            (command.output != nil, "-o names one file; a batch saves into --dir (give DEST in the manifest)"),
            (command.checksum != nil, "--checksum is for one file; give checksum= per file in the manifest"),
            (command.range != nil, "--range is for one file"),
            (command.remoteHeaderName, "-J is for one file"),
        ]
        if let (_, message) = refused.first(where: { $0.0 }) { throw SpateError(.usage, message) }
    }

    /// Runs the batch; returns its exit code (130 when interrupted).
    func run() async throws(SpateError) -> Int32 {
        let total = commandLine.count + (manifest?.selectedCount ?? 0)
        if let manifest, manifest.shard != .all {
            Console.note("shard \(manifest.shard): \(manifest.selectedCount) of \(manifest.totalCount) entries of \(manifest.name)")
        }
        let progress = BatchProgress(quiet: quiet, total: total)
        let log = self.log
        let batch = try DownloadBatch(options: options) { event in
            log?.record(event)
            progress.handle(event)
        }
        let entries = ChainedEntries(first: commandLine.makeIterator(), second: try manifest?.entries())
        let summary: BatchSummary
        do {
            summary = try await batch.run(entries)
        } catch {
            // The batch could not start (its base directory): the events still end with a
            // summary, every file not started.
            progress.clear()
            var none = BatchSummary()
            none.stoppedEarly = true
            log?.summary(none, exitCode: error.kind.exitCode, notStarted: total)
            throw error
        }
        progress.clear()
        // (A stop that came after the last file ended stopped nothing.)
        let interrupted = Task.isCancelled && (summary.cancelled > 0 || Self.notStarted(summary, total: total) > 0)
        let stop = TimeLimit.explain(SpateError(.cancelled, "interrupted"))
        var code: Int32 = interrupted ? stop.kind.exitCode : summary.exitCode
        if let failure = manifest?.failure {
            Console.error(failure.message)
            if code == 0 { code = failure.kind.exitCode }
        }
        Console.note(Self.summaryLine(summary, total: total))
        for (file, error) in summary.failures {
            Console.error("\(file.path): \(error.message)\(file.line > 0 ? " (line \(file.line))" : "")")
        }
        if summary.failed > summary.failures.count {
            Console.error("… and \(summary.failed - summary.failures.count) more failed files (see --events for all)")
        }
        if interrupted { Console.error("\(stop.message); run the same command again to resume") }
        log?.summary(summary, exitCode: code, notStarted: summary.stoppedEarly ? Self.notStarted(summary, total: total) : 0)
        return code
    }

    /// The files of the list that a stopped batch never reached.
    static func notStarted(_ s: BatchSummary, total: Int) -> Int {
        max(0, total - s.succeeded - s.failed - s.skipped - s.cancelled)
    }

    static func summaryLine(_ s: BatchSummary, total: Int) -> String {
        var text = "\(total) file\(total == 1 ? "" : "s"): \(s.succeeded) saved"
        text += ", \(s.failed) failed, \(s.skipped) skipped (already complete)"
        if s.cancelled > 0 { text += ", \(s.cancelled) stopped in flight" }
        if s.stoppedEarly { text += ", \(notStarted(s, total: total)) not started" }
        text += "; \(ByteSize.format(s.bytes)) in \(ProgressRenderer.seconds(s.elapsed.secondsDouble)), \(ByteSize.formatRate(s.bytesPerSecond))"
        return text
    }
}

/// The command line's URLs, then the manifest's entries.
struct ChainedEntries: IteratorProtocol {
    var first: IndexingIterator<[ManifestEntry]>
    var second: Manifest.Entries?

    mutating func next() -> ManifestEntry? {
        if let entry = first.next() { return entry }
        return second?.next()
    }
}
