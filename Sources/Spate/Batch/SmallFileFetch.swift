import Synchronization

/// A batch's files that may be small, fetched without a task or a `Download` each: one GET
/// for the whole file (`DownloadOptions.wholeFileBytes`), driven by callbacks on the session's
/// threads. The slot is granted on the thread that freed one; the transfer ends on the loop
/// thread, which reads the reply and starts the next file's request at once; the publisher's
/// thread checks the bytes (a checksum, a server's digest), writes them to a file with no name,
/// flushes and names it (`GroupPublisher.save`; the loop thread writes it itself when 16 MiB
/// already wait there).
///
/// Why: a `Download` per small file (its engine, resolver, transport, task, continuations and
/// about 75 allocations) cost about as much CPU as the file's own transfer, and every file
/// crossed from the pool to the loop thread and back twice; on two cores that work was what
/// kept the connections waiting (10,000 files of 0–64 KiB: 1.65× faster without it,
/// docs/performance.md, "Eleventh session").
///
/// Only the plain case takes this path: a destination where nothing is (no file, no partial
/// file, no journal), no mirrors, no `--force`. The reply is read by the same rules as the
/// engine's probe (`ProbeReply`). Anything else hands the file to a `Download` (the batch's
/// `fallBack`) with what the request found (`RemoteResolver.Prefetched`), so that it costs no
/// request more:
/// - a bigger file: the `Download` goes on from the probe's answer — and from a server
///   without ranges, which sent it whole, with the reply itself (paused after its head and
///   handed over with its connection slot, `TransferHandover`), so it is read once;
/// - a failure that asking again may mend (refused, throttled, an error status, a stall, a
///   transport error): the `Download`'s probe judges it as its own first attempt (stops, or
///   waits and asks again within its retry budget), so retries are judged in one place.
/// What fails at once in the engine's probe too (a redirect without a Location, too many
/// redirects, a bad Content-Range, a mismatching checksum) fails the file here, with the same
/// error.
final class SmallFileFetch: Sendable {
    /// One file on its way.
    final class Fetch: Sendable {
        let file: BatchFile
        let priority: UInt64
        let requests: RequestBuilder
        fileprivate let state: Mutex<State>
        fileprivate let started: ContinuousClock.Instant

        var url: RemoteURL { requests.url }
        var options: DownloadOptions { requests.options }

        init(file: BatchFile, url: RemoteURL, options: DownloadOptions, priority: UInt64, now: ContinuousClock.Instant) {
            self.file = file
            self.priority = priority
            self.requests = RequestBuilder(url: url, options: options)
            self.started = now
            state = Mutex(State(target: url))
        }
    }

    fileprivate struct State {
        enum Phase { case idle, waiting(UInt64), transferring(UInt64), saving, ended }
        var phase = Phase.idle
        var cancelled = false
        /// The URL asked next (the file's, or a redirect's target).
        var target: RemoteURL
        var redirects = 0
        var requests = 0
        var timeToFirstByte: Duration?
    }

    /// How a fetch ended — or, once, that it left the network for the publisher.
    enum Ending: Sendable {
        /// Not an end: the file is written (or with the publisher to write) and waits for its
        /// flushes. Every fetch that says this ends with `.saved` or `.failed` later.
        case written
        case saved(DownloadResult)
        /// `afterWritten`: it had said `.written`.
        case failed(SpateError, afterWritten: Bool)
        /// Not a plain small file: a `Download` takes over (with the probe's answer, if any).
        case fallBack(RemoteResolver.Prefetched?)
        case cancelled
    }

    private let session: DownloadSession
    private let emit: @Sendable (BatchEvent) -> Void
    private let ended: @Sendable (Fetch, Ending) -> Void
    /// The fetches not yet ended (for `cancelAll`), and whether it was called.
    private let running = Mutex<(fetches: [ObjectIdentifier: Fetch], cancelled: Bool)>(([:], false))

    /// - Parameter ended: called once per fetch with its end (and before that with `.written`
    ///   when it got that far), on whichever session thread it happened.
    init(session: DownloadSession, emit: @escaping @Sendable (BatchEvent) -> Void,
         ended: @escaping @Sendable (Fetch, Ending) -> Void) {
        self.session = session
        self.emit = emit
        self.ended = ended
    }

    /// Whether a batch's file with these options takes this path: nothing at the destination,
    /// one source, nothing to replace, the whole file into a file.
    static func takes(_ options: DownloadOptions) -> Bool {
        options.noPartialFile && options.wholeFileBytes > 0 && options.mirrors.isEmpty && !options.overwrite
            && options.output.isFile && options.byteRange == nil && !options.nameFromServer
    }

    /// Starts `fetch`: a connection slot (now, or when one frees), then its request.
    func start(_ fetch: Fetch) {
        let refused = running.withLock { r -> Bool in
            if r.cancelled { return true }
            r.fetches[ObjectIdentifier(fetch)] = fetch
            return false
        }
        if refused {
            ended(fetch, .cancelled)
            return
        }
        requestSlot(fetch)
    }

    /// Stops every fetch not yet saving: waits are withdrawn and transfers cancelled (those end
    /// `.cancelled`). A fetch between two steps ends at its next one: cancelled, or — when its
    /// whole file is already in — saved, or handed over (the batch records a hand-over after
    /// a stop as cancelled). Files already with the publisher are saved. Later `start`s end
    /// at once.
    func cancelAll() {
        let fetches = running.withLock { r -> [Fetch] in
            r.cancelled = true
            return Array(r.fetches.values)
        }
        // First every waiting fetch out of the queue, in one lock section: a waiter that a
        // freed slot finds cancelled gives the slot back, which grants the next one, and so on
        // — a chain of calls, one deeper per waiter, that thousands of waiters would overflow.
        var waiting: [UInt64: Fetch] = [:]
        for fetch in fetches {
            if case .waiting(let id) = fetch.state.withLock({ $0.phase }) { waiting[id] = fetch }
        }
        let withdrawn = session.budgets.withdraw(Set(waiting.keys))
        // Then every fetch is marked, before any transfer is cancelled: a slot a cancelled
        // transfer frees goes to a waiter (one that queued since) that then sees the mark.
        let phases = fetches.map { fetch in
            fetch.state.withLock { s -> State.Phase in
                s.cancelled = true
                return s.phase
            }
        }
        for id in withdrawn { finish(waiting[id]!, .cancelled) }
        for (fetch, phase) in zip(fetches, phases) {
            switch phase {
            case .waiting(let id) where !withdrawn.contains(id):
                if session.budgets.withdraw(id) { finish(fetch, .cancelled) }
            case .transferring(let id):
                session.loop.cancel(transfer: id)
            case .waiting, .idle, .saving, .ended:
                break  // (an idle fetch sees the mark at its next step)
            }
        }
    }

    private func finish(_ fetch: Fetch, _ ending: Ending) {
        let first = fetch.state.withLock { s -> Bool in
            if case .ended = s.phase { return false }
            s.phase = .ended
            return true
        }
        guard first else { return }
        running.withLock { _ = $0.fetches.removeValue(forKey: ObjectIdentifier(fetch)) }
        ended(fetch, ending)
    }

    // MARK: - Steps (each on the thread the previous one ended on)

    private func requestSlot(_ fetch: Fetch) {
        // Under the fetch's lock, so a slot granted on another thread at once finds the wait
        // recorded (and `cancelAll` finds it to withdraw).
        let now: BudgetSlot?? = fetch.state.withLock { s in
            if s.cancelled { return .none }
            switch session.budgets.acquire(s.target.origin, priority: fetch.priority, then: { [self] slot in send(fetch, slot) }) {
            case .granted(let slot):
                return .some(slot)
            case .queued(let id):
                s.phase = .waiting(id)
                return .some(nil)
            }
        }
        switch now {
        case .none: finish(fetch, .cancelled)
        case .some(.some(let slot)): send(fetch, slot)
        case .some(.none): break
        }
    }

    private func send(_ fetch: Fetch, _ slot: BudgetSlot) {
        // A server without ranges that sends a bigger file whole: its reply is paused and
        // handed to the file's `Download` (as the engine's own probe does), not cut and asked
        // for again. Not with --http2 (a stream of a multiplexed connection).
        let sink = ProbeSink(wholeFileBytes: fetch.options.wholeFileBytes, handsOver: !fetch.options.http2)
        let started: Bool = fetch.state.withLock { s in
            guard !s.cancelled else { return false }
            // A probe reads at most a small file: a 64 KiB buffer (as `RemoteResolver`'s).
            let buffer = min(64 * 1024, session.receiveBufferBytes(fixed: fetch.options.receiveBufferBytes))
            let spec = fetch.requests.probe(s.target, bufferBytes: buffer, slot: slot, wholeFileBytes: fetch.options.wholeFileBytes)
            guard let id = session.loop.start(spec, sink: sink, completion: { [self] result in
                received(fetch, slot: slot, sink: sink, result: result)
            }) else { return false }
            s.requests += 1
            s.phase = .transferring(id)
            return true
        }
        if !started {
            session.budgets.release(slot)
            finish(fetch, .cancelled)
        }
    }

    /// On the loop thread: the reply is in.
    private func received(_ fetch: Fetch, slot: BudgetSlot, sink: ProbeSink, result: Result<TransferOutcome, any Error>) {
        guard case .success(let outcome) = result else {
            session.budgets.release(slot)
            finish(fetch, .cancelled)
            return
        }
        let (target, cancelled) = fetch.state.withLock { s -> (RemoteURL, Bool) in
            s.phase = .idle
            if s.timeToFirstByte == nil { s.timeToFirstByte = outcome.timeToFirstByte }
            return (s.target, s.cancelled)
        }
        let reply: ProbeReply
        var redirects = fetch.state.withLock { $0.redirects }
        do throws(SpateError) {
            reply = try ProbeReply.read(outcome, sink: sink, target: target, redirects: &redirects,
                                        serverDigests: fetch.options.serverDigests, wallSeconds: session.clock.wallSeconds)
        } catch {
            // What the engine's probe throws at once (no Location, too many redirects, a bad
            // Content-Range): the file fails as its `Download` would.
            session.budgets.release(slot, unlessKeptBy: outcome.handover)
            finish(fetch, cancelled ? .cancelled : .failed(error, afterWritten: false))
            return
        }
        if case .failed(let end) = reply, let notice = session.budgets.judge(end, slot: slot, now: session.clock.now)?.notice {
            // As the engine's probe: the host's budget hears of it at once.
            emit(.file(fetch.file, .notice(notice)))
        }
        // (A reply handed over keeps its slot until the `Download` has streamed it, or until the
        // hand-over is dropped: every path below but the fall-back drops it.)
        session.budgets.release(slot, unlessKeptBy: outcome.handover)
        if cancelled {
            finish(fetch, .cancelled)
            return
        }
        func handOver(_ attempt: RemoteResolver.Prefetched.Attempt) {
            let (requests, first) = fetch.state.withLock { ($0.requests, $0.timeToFirstByte) }
            // Only an answer comes with its paused reply: a failure's retries must not wait
            // for a slot while this one holds its own.
            var handover: TransferHandover?
            if case .answered = attempt { handover = outcome.handover }
            finish(fetch, .fallBack(RemoteResolver.Prefetched(attempt: attempt, target: target, redirects: redirects,
                                                              replyWait: outcome.head != nil ? outcome.replyWait : nil,
                                                              requests: requests, timeToFirstByte: first,
                                                              handover: handover)))
        }
        switch reply {
        case .redirect(let next):
            fetch.state.withLock {
                $0.target = next
                $0.redirects = redirects
            }
            requestSlot(fetch)
        case .failed(let end):
            handOver(.failed(end))
        case .file(let remote, let body):
            guard let body, let size = remote.size, Int64(body.count) == size else {
                handOver(.answered(remote))
                return
            }
            save(fetch, remote: remote, body: body)
        }
    }

    /// The whole file is in memory: checked as the engine checks it, written, then flushed and
    /// named by the publisher.
    private func save(_ fetch: Fetch, remote: RemoteFile, body: [UInt8]) {
        let forward: @Sendable (DownloadEvent) -> Void = { [emit] event in emit(.file(fetch.file, event)) }
        let expected: ServerDigest?
        do throws(SpateError) {
            expected = try DownloadEngine.expectedDigest(remote, options: fetch.options, emit: forward)
            forward(.started(try DownloadEngine.announcedPlan(remote, options: fetch.options)))
            if expected != nil { forward(.verifying) }
        } catch {
            finish(fetch, .failed(error, afterWritten: false))
            return
        }
        fetch.state.withLock { $0.phase = .saving }
        ended(fetch, .written)
        let size = Int64(body.count)  // (not the body: it is gone once written)
        let done: @Sendable (Result<Void, SpateError>) -> Void = { [self] saved in
            switch saved {
            case .failure(let error):
                finish(fetch, .failed(error, afterWritten: true))
            case .success:
                let (requests, first) = fetch.state.withLock { ($0.requests, $0.timeToFirstByte) }
                let result = DownloadResult(
                    path: fetch.file.path, bytes: size, elapsed: session.clock.now - fetch.started,
                    verifiedChecksum: expected?.checksum, checksumSource: expected?.source, verificationTail: nil,
                    connections: 1, requests: requests, retries: 0, timeToFirstByte: first, bytesResumed: 0)
                forward(.finished(result))
                finish(fetch, .saved(result))
            }
        }
        // Checked and written by the publisher's thread, unless it has enough waiting: then
        // here, on the loop thread, so memory stays bounded and the disk's pace holds the
        // requests back.
        if session.publisher.save(body, to: fetch.file.path, from: fetch.url, verifying: expected?.checksum,
                                  mode: FileMode.newFileMode, completion: done) { return }
        do throws(SpateError) {
            let file = try OutputFile.smallFile(body, for: fetch.file.path, from: fetch.url, verifying: expected?.checksum,
                                                mode: FileMode.newFileMode)
            session.publisher.publish(file, mode: FileMode.newFileMode, completion: done)
        } catch {
            done(.failure(error))
        }
    }
}
