import ArgumentParser
import CSpateSystem
import Dispatch
import Glibc
import Spate

/// Entry point: parses arguments, runs the download (or the demo), maps every failure to one
/// line on stderr and a documented exit code.
@main
enum Main {
    static func main() async {
        signal(SIGPIPE, SIG_IGN)
        // Give freed heap memory back to the system sooner (glibc keeps 128 KiB by default and
        // raises that threshold as large blocks come and go): about 1 MiB less resident memory
        // when the connection count changes, measured here.
        spate_set_malloc_trim_threshold(64 * 1024)
        // A batch holds a descriptor per file being saved plus a socket per connection: take
        // the hard limit (as many servers do) rather than fail with EMFILE at 1024.
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        let arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.first == "journal" {
            // `spate journal show FILE`: a separate command tree, so `spate URL` keeps its form.
            JournalCommand.run(Array(arguments.dropFirst()))
        }
        if arguments.first == "bench" {
            exit(await BenchCommand.main(Array(arguments.dropFirst())))
        }
        let command: SpateCommand
        do {
            command = try SpateCommand.parse()
        } catch {
            let code = SpateCommand.exitCode(for: error)
            if code == .success {
                print(SpateCommand.fullMessage(for: error))
                exit(0)
            }
            Console.error(CommandLineErrors.oneLine(SpateCommand.message(for: error), help: "spate --help"))
            exit(SpateError.Kind.usage.exitCode)
        }
        if command.version {
            print("spate \(SpateVersion.string)")
            for line in LibraryVersions.lines { print(line) }
            exit(0)
        }
        let recorder = command.trace.map { _ in TraceRecorder() }
        var status = await run(command, trace: recorder)
        if let recorder, let path = command.trace {
            // Written however the run ended: a trace of a failure is the one people need.
            do { try recorder.write(to: path) } catch {
                Console.error(error.message)
                if status == 0 { status = error.kind.exitCode }
            }
        }
        exit(status)
    }

    static func run(_ command: SpateCommand, trace: TraceRecorder?) async -> Int32 {
        var log: EventLog?
        var single: BatchFile?
        do {
            try command.checkModeOptions()
            let maxTime = try TimeLimit.parse(command.maxTime)
            var options = try command.downloadOptions()
            options.trace = trace
            log = try command.events.map { path throws(SpateError) in try EventLog(path: path) }
            if command.isBatch {
                let batch = try BatchJob(command: command, options: options, log: log)
                return try await Interruptible.run(maxTime: maxTime) { () async throws(SpateError) -> Int32 in try await batch.run() }
            }
            let job: @Sendable () async throws(SpateError) -> Int32
            if let url = command.url {
                var options = options
                let target = try command.outputTarget(checksum: options.checksum != nil)
                if let target {
                    options.output = target.output
                    try options.validate()
                }
                let plan = try DownloadJob(url: url, output: command.output, options: options, quiet: command.quiet, log: log,
                                           target: target)
                single = plan.file
                job = { () async throws(SpateError) -> Int32 in try await plan.run() }
            } else {
                let demo = try DemoJob(output: command.output, options: options, quiet: command.quiet, sizeText: command.demoSize)
                job = { () async throws(SpateError) -> Int32 in try await demo.run(); return 0 }
            }
            return try await Interruptible.run(maxTime: maxTime, job)
        } catch {
            Console.error(error.message)
            if DownloadJob.canResume(after: error, command: command) {
                Console.note("the partial file and its journal are kept: run the same command again to resume")
            }
            // A download that never started (its output exists, its directory is not
            // writable, ...) still ends its events as a batch's file would: queued, failed,
            // summary. One that started has logged its own end.
            if let log, single == nil, !command.isBatch, let url = command.url, let remote = try? RemoteURL(url) {
                // The path as `-o` names it, with the URL's name inside a directory (`-o DIR/`).
                let name = FilePaths.defaultFileName(for: remote)
                let output = command.output ?? name
                let file = BatchFile(index: 0, line: 0, url: remote.redacted,
                                     path: output.hasSuffix("/") || FilePaths.isDirectory(output) ? (output.hasSuffix("/") ? output : output + "/") + name : output)
                log.record(.queued(file))
                DownloadJob.logFailure(error, file: file, to: log)
            }
            return error.kind.exitCode
        }
    }
}

/// Runs a job so that SIGINT, SIGTERM and SIGHUP (a closed terminal) cancel it — the partial
/// file and journal are kept for a resume — instead of killing the process mid-write.
/// With `maxTime` (`-m`), the limit cancels it the same way (`TimeLimit`).
enum Interruptible {
    static func run(maxTime: Duration? = nil,
                    _ job: @escaping @Sendable () async throws(SpateError) -> Int32) async throws(SpateError) -> Int32 {
        let task = Task { () async throws -> Int32 in try await job() }
        let timer = maxTime.map { limit in
            Task {
                guard (try? await Task.sleep(for: limit)) != nil else { return }  // (cancelled: the job ended)
                TimeLimit.markReached()
                task.cancel()
            }
        }
        defer { timer?.cancel() }
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        signal(SIGHUP, SIG_IGN)
        let sources = [SIGINT, SIGTERM, SIGHUP].map { sig -> any DispatchSourceSignal in
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { task.cancel() }
            source.resume()
            return source
        }
        defer { sources.forEach { $0.cancel() } }
        do {
            return try await task.value
        } catch let error as SpateError {
            if error.kind == .cancelled {
                if TimeLimit.reached { throw TimeLimit.error }
                Console.error("interrupted")
                return error.kind.exitCode
            }
            throw error
        } catch {
            throw SpateError(.localIO, "unexpected error: \(error)")
        }
    }
}

/// Argument errors as one line: ArgumentParser's messages may span lines (a value's help, a
/// usage block), and every spate error is one line on stderr.
enum CommandLineErrors {
    /// The first non-empty line of `message`, and where help is (`help`: a command line).
    static func oneLine(_ message: String, help: String) -> String {
        let lines = message.split(whereSeparator: \.isNewline).map { String($0).trimmingSpacesAndTabs() }
        let first = lines.first { !$0.isEmpty } ?? "invalid arguments"
        return "\(first) (see \(help))"
    }
}
