import Spate

/// A download of a user-given URL: resolves the output path, runs the library's `Download`,
/// renders its events.
struct DownloadJob: Sendable {
    let download: Download
    let quiet: Bool
    let log: EventLog?
    /// The download, as `--events` names it (one file: index 0).
    let file: BatchFile

    /// How the summary names the output ("saved PATH", "wrote to standard output", …).
    let verb: String?

    /// - Parameter target: a stream or a discard (`-o -`, a FIFO, a device, `/dev/null`);
    ///   nil for a file.
    init(url: String, output: String?, options: DownloadOptions, quiet: Bool, log: EventLog? = nil,
         target: OutputTarget? = nil) throws(SpateError) {
        let remote = try RemoteURL(url)
        let path: String
        if let target {
            guard !options.nameFromServer else {
                throw SpateError(.usage, "-J names a file; it cannot be used with -o \(target.path) or --discard")
            }
            path = target.path
        } else if options.nameFromServer {
            // -J: the name comes from the server; -o, if given, is the directory.
            path = output ?? "."
            guard FilePaths.isDirectory(path) else {
                throw SpateError(.usage, "with -J, -o must name an existing directory (\(path) is not one)")
            }
        } else {
            path = try DownloadJob.outputPath(for: remote, output: output, overwrite: options.overwrite)
        }
        if options.insecure {
            Console.note("warning: TLS certificate verification is off (--insecure): anyone on the path can change the file")
        }
        download = try Download(url: url, to: path, options: options)
        verb = target?.summaryVerb
        self.quiet = quiet
        self.log = log
        file = BatchFile(index: 0, line: 0, url: remote.redacted, path: path)
    }

    /// `-o PATH`, `-o DIR/` (default name inside DIR), or the URL's sanitized last segment.
    /// Checked before any traffic: the directory must be writable and an existing file is never
    /// replaced without --force.
    static func outputPath(for url: RemoteURL, output: String?, overwrite: Bool) throws(SpateError) -> String {
        var path: String
        if let output {
            guard !output.isEmpty else { throw SpateError(.usage, "-o needs a path") }
            path = output
            if output.hasSuffix("/") || FilePaths.isDirectory(output) {
                path = (output.hasSuffix("/") ? output : output + "/") + FilePaths.defaultFileName(for: url)
            }
        } else {
            path = FilePaths.defaultFileName(for: url)
        }
        guard FilePaths.directoryIsWritable(for: path) else {
            throw SpateError(.localIO, "cannot write to directory \(FilePaths.directory(of: path)) (missing or not writable)")
        }
        if FilePaths.exists(path) && !overwrite {
            throw SpateError(.localIO, "\(path) already exists; use --force to replace it")
        }
        return path
    }

    /// Whether a journal was left for the output of `command` after `error`.
    /// Not after a refusal that the same command would meet again (a journal that cannot be
    /// used, a remote that changed, bad arguments), and not when the files are another live
    /// run's.
    static func canResume(after error: SpateError, command: SpateCommand) -> Bool {
        guard ![.usage, .journal, .remoteChanged, .checksumMismatch, .outputClosed].contains(error.kind), command.output != "-",
              let url = command.url, let remote = try? RemoteURL(url),
              let path = try? outputPath(for: remote, output: command.output, overwrite: true) else { return false }
        return FilePaths.exists(Download.journalPath(for: path)) && FilePaths.exists(Download.partialPath(for: path))
            && !Download.outputIsLocked(path)
    }

    func run() async throws(SpateError) -> Int32 {
        log?.record(.queued(file))
        let started = ContinuousClock.now
        let result: DownloadResult
        do {
            result = try await DownloadJob.run(download, quiet: quiet, log: log, file: file)
        } catch {
            // Interrupted too (SIGINT/SIGTERM end here as `.cancelled`; --max-time as its own
            // error): the events end with `failed` and `summary` like any failure.
            if let log { DownloadJob.logFailure(error, file: file, to: log, elapsed: ContinuousClock.now - started) }
            throw TimeLimit.explain(error)
        }
        Console.note(ProgressRenderer.summary(result, verb: verb))
        if let log {
            var summary = BatchSummary()
            summary.succeeded = 1
            summary.bytes = result.bytes - result.bytesResumed
            summary.elapsed = result.elapsed
            log.summary(summary, exitCode: 0)
        }
        return 0
    }

    /// The last two events of a failed single download, which ran for `elapsed`. One stopped
    /// in flight (interrupted, or at --max-time) counts as cancelled, as a batch's files do.
    static func logFailure(_ error: SpateError, file: BatchFile, to log: EventLog, elapsed: Duration = .zero) {
        log.record(.failed(file, error))
        var summary = BatchSummary()
        summary.elapsed = elapsed
        if error.kind == .cancelled { summary.cancelled = 1 } else { summary.failed = 1 }
        log.summary(summary, exitCode: TimeLimit.explain(error).kind.exitCode)
    }

    /// Runs `download`, rendering its events (and writing them to `log`) until it ends.
    static func run(_ download: Download, quiet: Bool, log: EventLog? = nil,
                    file: BatchFile? = nil) async throws(SpateError) -> DownloadResult {
        let renderer = Task {
            var renderer = ProgressRenderer(quiet: quiet)
            for await event in download.events {
                renderer.handle(event)
                if let log, let file { log.record(.file(file, event)) }
            }
            renderer.clearLine()
        }
        let result: Result<DownloadResult, SpateError>
        do {
            result = .success(try await download.run())
        } catch {
            result = .failure(error)
        }
        await renderer.value
        return try result.get()
    }
}
