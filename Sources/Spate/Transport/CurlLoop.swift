import CCurl
import Glibc
import Synchronization

/// One libcurl multi handle driven by one dedicated thread; every HTTP request of a session (all
/// its downloads, every host) goes through it.
///
/// Threading: the loop thread owns the `CURLM` and every easy handle. Other threads only append
/// commands to a locked inbox and call `curl_multi_wakeup`, the one multi call that is safe from
/// any thread. Each request is an `async` call suspended on a continuation that the loop resumes
/// when libcurl reports the transfer done (or when it is cancelled) — or, for a batch's small
/// files (`SmallFileFetch`), a callback the loop calls on its own thread, so that no task waits
/// and the next request can start without a hop to the pool.
///
/// Why one thread and not a task: `curl_multi_poll` blocks, and a blocked task would take one of
/// the cooperative pool's threads (two on this machine) away from everything else.
final class CurlLoop: Sendable {
    /// HTTP/2 streams on one connection at most (`--http2`): more requests to the host open
    /// another connection. Why not one connection for everything: one TCP connection's window
    /// and one loss recovery would carry every range (what hf_transfer and rclone warn about).
    /// (On loopback, 8 and 100 measured alike: no loss to recover from; docs/performance.md.)
    static let streamsPerConnection = 8

    private enum Command {
        case start(UInt64, TransferSpec, any ResponseSink, TransferCompletion)
        /// A transfer handed over (`TransferStop.handOver`) goes on into this sink.
        case adopt(UInt64, any ResponseSink, TransferCompletion)
        case cancel(UInt64)
        case abandon(UInt64)
        case shutdown
    }

    private struct Inbox: ~Copyable {
        var commands: [Command] = []
        var nextID: UInt64 = 1
        var isShutDown = false
    }

    /// The `CURLM *`. Touched only by the loop thread, except `curl_multi_wakeup`.
    private nonisolated(unsafe) let multi: UnsafeMutableRawPointer
    private let inbox = Mutex(Inbox())
    private nonisolated(unsafe) var thread: LoopThread?
    /// The stall watchdog's time source (read on the loop thread).
    let clock: any EngineClock
    /// The connections open per host.
    let sockets = HostSockets()
    /// `--trace`: every request that reached the wire, as a span on its connection's lane.
    private let trace: TraceRecorder?
    /// `--max-rate`: the shared budget and the transfers it paused (loop thread only).
    private nonisolated(unsafe) let rate: RateGate?
    /// Told of every reply's host as its head completes (the session's `HostOutages`).
    private let outages: HostOutages?

    /// - Parameters:
    ///   - maxConnections: the most connections open at once, busy or idle.
    ///   - maxPerHost: the most connections open at once to one host. The session's budgets
    ///     keep requests within both; these caps make libcurl hold the line on open sockets
    ///     too (it closes an idle connection before it opens one beyond them).
    init(maxConnections: Int, maxPerHost: Int, maxBytesPerSecond: Int64? = nil, clock: any EngineClock,
         trace: TraceRecorder? = nil, outages: HostOutages? = nil) {
        CurlGlobal.ensureInitialised()
        self.trace = trace
        self.outages = outages
        rate = maxBytesPerSecond.map { RateGate(budget: RateBudget(bytesPerSecond: $0, now: clock.now)) }
        guard let multi = curl_multi_init() else { fatalError("curl_multi_init failed: out of memory") }
        self.multi = multi
        self.clock = clock
        _ = spate_multi_setopt_long(multi, CURLMOPT_MAX_HOST_CONNECTIONS, maxPerHost)
        _ = spate_multi_setopt_long(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, maxConnections)
        _ = spate_multi_setopt_long(multi, CURLMOPT_MAXCONNECTS, maxConnections)
        _ = spate_multi_setopt_long(multi, CURLMOPT_MAX_CONCURRENT_STREAMS, Self.streamsPerConnection)
        thread = LoopThread(name: "spate-curl") { [self] in self.runLoop() }
    }

    /// Runs one request to completion, feeding the response to `sink` on the loop thread.
    ///
    /// Task cancellation removes the transfer and throws `CancellationError`.
    /// Transport failures do not throw: they come back in the outcome for the caller to judge.
    ///
    /// `handle` lets another task stop the transfer early (`abandon(_:)`): it then ends normally
    /// with `stop == .abandoned`.
    func perform(_ spec: TransferSpec, sink: any ResponseSink, handle: TransferHandle? = nil) async throws -> TransferOutcome {
        let id = inbox.withLock { inbox -> UInt64 in
            defer { inbox.nextID += 1 }
            return inbox.nextID
        }
        return try await submit(id) { continuation in
            let queue = { () -> Submission in self.send(.start(id, spec, sink, .task(continuation))) ? .queued : .refused }
            guard let handle else { return queue() }
            return handle.attach(id, starting: queue)
                ?? .ended(TransferOutcome(head: nil, stop: .abandoned, curlCode: 0, curlMessage: "", bodyBytes: 0))
        }
    }

    /// What `submit`'s closure did with the transfer.
    private enum Submission {
        case queued
        /// Not queued (the loop has shut down): the caller gets `CancellationError`.
        case refused
        /// Ended before it was queued (an abandoned handle).
        case ended(TransferOutcome)
    }

    /// Suspends until transfer `id`, which `queue` hands to the loop with the continuation,
    /// ends; task cancellation ends it with `.cancel(id)`. `onRefused` runs when it was never
    /// queued (cancelled first, or the loop is gone).
    ///
    /// Cancellation can race with the queueing: `queue` runs under the phase lock, so a
    /// `.cancel` for this id is always queued after the command and finds the transfer.
    private func submit(_ id: UInt64, onRefused: () -> Void = {},
                        _ queue: (CheckedContinuation<TransferOutcome, any Error>) -> Submission) async throws -> TransferOutcome {
        let phase = Mutex<StartPhase>(.notStarted)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<TransferOutcome, any Error>) in
                let submission = phase.withLock { p -> Submission in
                    if p == .cancelled { return .refused }
                    p = .started
                    return queue(continuation)
                }
                switch submission {
                case .queued: break
                case .refused:
                    onRefused()
                    continuation.resume(throwing: CancellationError())
                case .ended(let outcome): continuation.resume(returning: outcome)
                }
            }
        } onCancel: {
            let wasStarted = phase.withLock { p -> Bool in
                defer { p = .cancelled }
                return p == .started
            }
            if wasStarted { _ = send(.cancel(id)) }
        }
    }

    private enum StartPhase { case notStarted, started, cancelled }

    /// Starts a transfer whose end goes to `completion`, called on the loop thread (it must be
    /// quick: every transfer waits while it runs). For callers that are not tasks: a batch's
    /// small files (`SmallFileFetch`). Returns the id to `cancel(transfer:)` it with, or nil
    /// when the loop has shut down (`completion` is then never called).
    func start(_ spec: TransferSpec, sink: any ResponseSink,
               completion: @escaping @Sendable (Result<TransferOutcome, any Error>) -> Void) -> UInt64? {
        let id = inbox.withLock { inbox -> UInt64 in
            defer { inbox.nextID += 1 }
            return inbox.nextID
        }
        return send(.start(id, spec, sink, .callback(completion))) ? id : nil
    }

    /// Ends a transfer `start(_:sink:completion:)` began: its completion gets
    /// `CancellationError` (nothing happens when it has already ended).
    func cancel(transfer id: UInt64) {
        _ = send(.cancel(id))
    }

    /// Goes on with a transfer its first sink handed over (`TransferStop.handOver`): the rest
    /// of the reply, from the byte it stopped at, goes to `sink` (whose `accept` sees the head
    /// first). Ends like `perform`: task cancellation ends the transfer and throws
    /// `CancellationError`, as it does when the transfer is gone.
    func adopt(_ handover: TransferHandover, sink: any ResponseSink) async throws -> TransferOutcome {
        guard handover.take() else { throw CancellationError() }
        let id = handover.id
        // Taken, the hand-over no longer ends the paused transfer when dropped: a refusal must.
        return try await submit(id, onRefused: { _ = send(.abandon(id)) }) { continuation in
            send(.adopt(id, sink, .task(continuation))) ? .queued : .refused
        }
    }

    /// Ends a handed-over transfer nobody adopted (`TransferHandover`'s deinit).
    fileprivate func drop(handedOver id: UInt64) {
        _ = send(.abandon(id))
    }

    /// Ends the transfer behind `handle` (now, or as soon as it starts) with `stop == .abandoned`.
    /// Safe from any thread.
    func abandon(_ handle: TransferHandle) {
        if let id = handle.markAbandoned() { _ = send(.abandon(id)) }
    }

    /// Stops the loop: transfers still running end with `CancellationError`. Waits for the thread.
    func shutdown() {
        _ = send(.shutdown)
        thread?.join()
    }

    /// Queues a command and wakes the loop. False when the loop has shut down.
    private func send(_ command: Command) -> Bool {
        inbox.withLock { inbox -> Bool in
            if inbox.isShutDown { return false }
            if case .shutdown = command { inbox.isShutDown = true }
            let wasEmpty = inbox.commands.isEmpty
            inbox.commands.append(command)
            // One wake-up per batch of commands: the loop takes the whole inbox at once (under
            // this lock), so a command that finds it non-empty is taken with the first one,
            // whose wake-up is still ahead of the loop. (A wake-up is a write to libcurl's
            // socket pair and a read on the loop thread: with many small files, one per file.)
            // Under the lock: the loop thread cleans the multi handle up under it too, so a
            // wake-up can never reach a handle that is gone.
            if wasEmpty { curl_multi_wakeup(multi) }
            return true
        }
    }

    // MARK: - The loop thread

    private func runLoop() {
        var active: [UInt64: Transfer] = [:]
        /// Handed-over transfers that ended before anyone adopted them: their end, for `adopt`
        /// (at most the few handed over at once; removed by `adopt` or `abandon`).
        var endedUnadopted: [UInt64: Result<TransferOutcome, any Error>] = [:]
        var idleHandles: [EasyHandle] = []
        var running: Int32 = 0
        let attempts = ConnectAttempts(clock: clock)

        func recycle(_ easy: EasyHandle) {
            easy.reset()
            // Keep a few for reuse (their receive buffers stay allocated); free the rest.
            if idleHandles.count < 16 { idleHandles.append(easy) }
        }

        func add(_ transfer: Transfer) {
            transfer.added = true
            curl_multi_add_handle(multi, transfer.easy.raw)
        }

        func end(_ transfer: Transfer, with result: Result<TransferOutcome, any Error>) {
            if let trace { transfer.record(to: trace, result: result) }
            if transfer.added { curl_multi_remove_handle(multi, transfer.easy.raw) }
            transfer.added = false
            attempts.ended(transfer)
            transfer.freeLists()
            if let completion = transfer.completion {
                completion.resume(with: result)
            } else if transfer.handedOver, case .success(let outcome) = result, outcome.stop != .abandoned {
                endedUnadopted[transfer.id] = result
            }
            // libcurl 7.88 mixed one HTTP/2 stream's header bytes into the next stream of a
            // reused easy handle (a header line without a colon: CURLE_BAD_FUNCTION_ARGUMENT,
            // seen with nginx's limit_rate): an HTTP/2 transfer's handle is not reused.
            if !transfer.spec.tuning.http2 { recycle(transfer.easy) }
        }

        while true {
            let commands = inbox.withLock { inbox -> [Command] in
                let taken = inbox.commands
                inbox.commands.removeAll(keepingCapacity: true)
                return taken
            }
            for command in commands {
                switch command {
                case .start(let id, let spec, let sink, let completion):
                    let easy = idleHandles.popLast() ?? EasyHandle()
                    let transfer = Transfer(id: id, easy: easy, spec: spec, sink: sink, completion: completion, clock: clock,
                                            sockets: sockets, attempts: attempts, rate: rate, outages: outages)
                    if let failure = transfer.configure() {
                        transfer.freeLists()
                        recycle(easy)
                        completion.resume(with: .success(failure))
                        continue
                    }
                    active[id] = transfer
                    transfer.loop = self
                    // Held while its host has too many connection attempts under way
                    // (`ConnectGate`); requests held for a host start in arrival order.
                    if attempts.held[spec.host] == nil, attempts.admit(transfer) {
                        add(transfer)
                    } else {
                        attempts.held[spec.host, default: []].append(id)
                    }
                case .adopt(let id, let sink, let completion):
                    if let ended = endedUnadopted.removeValue(forKey: id) {
                        completion.resume(with: ended)
                    } else if let transfer = active[id], transfer.handedOver {
                        if let stop = transfer.adopt(sink, completion: completion) {
                            active.removeValue(forKey: id)
                            transfer.stop = stop
                            end(transfer, with: .success(transfer.outcome(code: CURLE_OK)))
                        } else {
                            // The byte it stopped at, and what follows, go to the new sink
                            // (libcurl delivers the kept bytes within this call; if the sink
                            // refuses them libcurl reports it here, but leaves the transfer
                            // running: it ends now).
                            let code = curl_easy_pause(transfer.easy.raw, CURLPAUSE_CONT)
                            if code != CURLE_OK {
                                active.removeValue(forKey: id)
                                end(transfer, with: .success(transfer.outcome(code: code)))
                            }
                        }
                    } else {
                        completion.resume(with: .failure(CancellationError()))
                    }
                case .cancel(let id):
                    if let transfer = active.removeValue(forKey: id) {
                        end(transfer, with: .failure(CancellationError()))
                    }
                case .abandon(let id):
                    endedUnadopted.removeValue(forKey: id)
                    if let transfer = active.removeValue(forKey: id) {
                        transfer.stop = .abandoned
                        end(transfer, with: .success(transfer.outcome(code: CURLE_OK)))
                    }
                case .shutdown:
                    for transfer in active.values { end(transfer, with: .failure(CancellationError())) }
                    active.removeAll()
                    idleHandles.removeAll()
                    inbox.withLock { _ in _ = curl_multi_cleanup(multi) }
                    return
                }
            }

            curl_multi_perform(multi, &running)

            var left: Int32 = 0
            while let message = curl_multi_info_read(multi, &left) {
                guard message.pointee.msg == CURLMSG_DONE, let easyRaw = message.pointee.easy_handle else { continue }
                let code = spate_multi_msg_result(message)
                var privateRaw: UnsafeMutableRawPointer?
                _ = spate_easy_getinfo_pointer(easyRaw, CURLINFO_PRIVATE, &privateRaw)
                guard let privateRaw else { continue }
                let id = UInt64(UInt(bitPattern: privateRaw))
                guard let transfer = active.removeValue(forKey: id) else { continue }
                end(transfer, with: .success(transfer.outcome(code: code)))
            }

            var timeout: Int32 = 1000
            // Attempts ended and replies came in `perform`: start what the gate now admits, at
            // once (the poll would otherwise wait for the next socket event).
            if !attempts.held.isEmpty {
                let (started, wait) = attempts.release(active, start: add)
                if started {
                    timeout = 0
                } else if let wait {
                    timeout = Int32(min(1000, max(1, (wait.secondsDouble * 1000).rounded(.up))))
                }
            }
            if let rate, !rate.paused.isEmpty {
                // Paused by the rate budget: resume them once the debt is repaid.
                let wait = rate.budget.wait(now: clock.now)
                if wait == .zero {
                    let ids = rate.paused
                    rate.paused.removeAll()
                    for id in ids { active[id]?.resumeFromRateLimit() }
                    timeout = 0
                } else {
                    timeout = min(timeout, Int32(min(1000, max(1, (wait.secondsDouble * 1000).rounded(.up)))))
                }
            }
            curl_multi_poll(multi, nil, 0, timeout, nil)
        }
    }
}

/// Who hears of a transfer's end: a task waiting in `perform`, or a callback (`start`).
private enum TransferCompletion {
    case task(CheckedContinuation<TransferOutcome, any Error>)
    case callback(@Sendable (Result<TransferOutcome, any Error>) -> Void)

    func resume(with result: Result<TransferOutcome, any Error>) {
        switch self {
        case .task(let continuation): continuation.resume(with: result)
        case .callback(let completion): completion(result)
        }
    }
}

/// The loop thread's `ConnectGate` and the requests it holds back, per host in arrival order.
/// Touched only on the loop thread.
private final class ConnectAttempts {
    var gate = ConnectGate()
    /// Requests held back, per host, in arrival order (each host's at most its budget).
    var held: [String: [UInt64]] = [:]
    let clock: any EngineClock

    init(clock: any EngineClock) { self.clock = clock }

    /// Whether `transfer` may start now; when it may, it counts as started.
    func admit(_ transfer: Transfer) -> Bool {
        let host = transfer.spec.host
        guard gate.limits(host) else { return true }
        guard gate.admits(host) else { return false }
        gate.started(transfer.id, to: host, now: clock.now)
        transfer.attemptCounted = true
        return true
    }

    /// A reply's head came: the server has taken the connection, and says whether it keeps it.
    func answered(_ transfer: Transfer, keepsConnection: Bool) {
        guard transfer.attemptCounted || !keepsConnection else { return }
        ended(transfer)
        gate.replied(transfer.spec.host, keepsConnection: keepsConnection)
    }

    /// The request ended (or was cancelled, held or not).
    func ended(_ transfer: Transfer) {
        guard transfer.attemptCounted else { return }
        transfer.attemptCounted = false
        gate.ended(transfer.id, to: transfer.spec.host)
    }

    /// Ends attempts that waited too long, then starts the held requests the gate admits now
    /// (those cancelled meanwhile are dropped). Returns whether any started, and how long the
    /// loop may sleep before an attempt stops counting (nil: no limit from the gate).
    func release(_ active: [UInt64: Transfer], start: (Transfer) -> Void) -> (started: Bool, wait: Duration?) {
        let now = clock.now
        _ = gate.expire(now: now)
        var started = false
        for (host, queue) in held {
            var taken = 0
            for id in queue {
                if let transfer = active[id] {
                    guard admit(transfer) else { break }
                    transfer.releasedFromHold()
                    start(transfer)
                    started = true
                }
                taken += 1
            }
            held[host] = taken == queue.count ? nil : Array(queue.dropFirst(taken))
        }
        let wait = held.isEmpty ? nil : gate.nextExpiry.map { max(.zero, $0 - now) }
        return (started, wait)
    }
}

/// The loop thread's `--max-rate` state: the shared budget and the transfers it paused.
private final class RateGate {
    var budget: RateBudget
    var paused: [UInt64] = []

    init(budget: RateBudget) { self.budget = budget }
}

/// The loop thread's record of one request in flight.
private final class Transfer {
    let id: UInt64
    let easy: EasyHandle
    let spec: TransferSpec
    /// The reply's reader; another one after a hand-over (`adopt`).
    var sink: any ResponseSink
    /// Who hears of the end; nil while handed over and not yet adopted.
    var completion: TransferCompletion?
    /// Paused after its sink handed it over (`TransferStop.handOver`), until `adopt`.
    var handedOver = false
    /// The loop, for the hand-over's `TransferHandover` (set when the loop takes it).
    var loop: CurlLoop?
    var headerList = HeaderList([])
    /// `TransferTuning.resolve`'s list (`CURLOPT_RESOLVE`), when there is one.
    var resolveList: HeaderList?
    var headBuilder = ResponseHeadBuilder()
    var head: ResponseHead?
    var stop: TransferStop?
    var bodyBytes: Int64 = 0
    let clock: any EngineClock
    var watchdog: StallWatchdog?
    let sockets: HostSockets
    /// What the open-socket hook gets (kept alive for the transfer).
    let opening: HostSockets.Opening
    /// The loop's connection attempts (`ConnectGate`).
    let attempts: ConnectAttempts
    /// Handed to the multi handle (not held back, not yet ended).
    var added = false
    /// Its attempt counts in the gate (`ConnectAttempts.admit`): its host limits attempts.
    /// When it does not, the host kept its connections, and a reply that keeps its own
    /// changes nothing in the gate (most replies, looked at without a table lookup).
    var attemptCounted = false
    /// The session's rate budget, if any.
    let rate: RateGate?
    /// The session's record of unreachable hosts, told of this reply (`HostOutages`).
    let outages: HostOutages?
    /// When the request was handed to libcurl.
    var started: ContinuousClock.Instant
    /// Paused by the rate budget now.
    var rateLimited = false
    /// Paused at some point of the watchdog's current window: the window starts again, so a
    /// transfer held back by `--max-rate` is never judged stalled.
    var rateLimitedInWindow = false

    init(id: UInt64, easy: EasyHandle, spec: TransferSpec, sink: any ResponseSink,
         completion: TransferCompletion, clock: any EngineClock, sockets: HostSockets, attempts: ConnectAttempts,
         rate: RateGate?, outages: HostOutages?) {
        self.attempts = attempts
        self.rate = rate
        self.outages = outages
        self.started = clock.now
        self.id = id
        self.easy = easy
        self.spec = spec
        self.sink = sink
        self.completion = completion
        self.clock = clock
        self.sockets = sockets
        self.opening = HostSockets.Opening(sockets: sockets, host: spec.host)
    }

    /// Frees the lists libcurl read while the transfer ran (its headers, `--resolve`).
    func freeLists() {
        headerList.free()
        resolveList?.free()
        resolveList = nil
    }

    /// Applies the spec to the easy handle; returns an outcome when libcurl refuses an option.
    func configure() -> TransferOutcome? {
        let tuning = spec.tuning
        let me = Unmanaged.passUnretained(self).toOpaque()
        headerList = HeaderList(spec.headers)
        var codes: [CURLcode] = [
            easy.set(CURLOPT_URL, string: spec.url),
            easy.set(CURLOPT_PROTOCOLS_STR, string: "http,https"),
            easy.set(CURLOPT_HTTPHEADER, list: headerList.raw),
            easy.set(CURLOPT_FOLLOWLOCATION, false),  // redirects are resolved by the probe, by hand
            easy.set(CURLOPT_HTTP_VERSION, tuning.http2 ? Int(CURL_HTTP_VERSION_2TLS) : Int(CURL_HTTP_VERSION_1_1)),
            easy.set(CURLOPT_BUFFERSIZE, tuning.bufferBytes),
            easy.set(CURLOPT_NOSIGNAL, true),
            easy.set(CURLOPT_TCP_KEEPALIVE, true),
            easy.set(CURLOPT_CONNECTTIMEOUT_MS, tuning.connectTimeout.milliseconds),
            easy.set(CURLOPT_USERAGENT, string: tuning.userAgent),
            easy.set(CURLOPT_ERRORBUFFER, pointer: UnsafeMutableRawPointer(easy.errorBuffer)),
            easy.set(CURLOPT_PRIVATE, pointer: UnsafeMutableRawPointer(bitPattern: UInt(id))),
            easy.set(CURLOPT_WRITEFUNCTION, callback: transferWriteCallback),
            easy.set(CURLOPT_WRITEDATA, pointer: me),
            easy.set(CURLOPT_HEADERFUNCTION, callback: transferHeaderCallback),
            easy.set(CURLOPT_HEADERDATA, pointer: me),
            easy.set(CURLOPT_SSL_VERIFYPEER, !tuning.insecure),
            easy.set(CURLOPT_SSL_VERIFYHOST, tuning.insecure ? 0 : 2),
        ]
        switch tuning.addressFamily {
        case .any: break
        case .ipv4: codes.append(easy.set(CURLOPT_IPRESOLVE, Int(CURL_IPRESOLVE_V4)))
        case .ipv6: codes.append(easy.set(CURLOPT_IPRESOLVE, Int(CURL_IPRESOLVE_V6)))
        }
        if let limit = tuning.stallLimit {
            // The stall watchdog runs in the progress callback (see `checkStall`).
            codes.append(easy.set(CURLOPT_NOPROGRESS, false))
            codes.append(spate_easy_setopt_xferinfo_function(easy.raw, transferProgressCallback))
            codes.append(easy.set(CURLOPT_XFERINFODATA, pointer: me))
            watchdog = StallWatchdog(limit: limit, now: clock.now)
        }
        if tuning.http2 {
            // Wait for a connection that can multiplex rather than open one per request;
            // libcurl opens another when one carries `streamsPerConnection` streams.
            codes.append(easy.set(CURLOPT_PIPEWAIT, true))
        }
        if spec.freshConnection { codes.append(easy.set(CURLOPT_FRESH_CONNECT, true)) }
        codes += sockets.install(on: easy, opening: Unmanaged.passUnretained(opening).toOpaque())
        if hostOverBudget { codes.append(easy.set(CURLOPT_FORBID_REUSE, true)) }
        if let proxy = tuning.proxy { codes.append(easy.set(CURLOPT_PROXY, string: proxy)) }
        if let noProxy = tuning.noProxy { codes.append(easy.set(CURLOPT_NOPROXY, string: noProxy)) }
        if let netrc = tuning.netrcFile {
            // Looked up for this request's host: a redirect target or a mirror gets its own entry
            // (or none), never the first host's.
            codes.append(easy.set(CURLOPT_NETRC, Int(CURL_NETRC_OPTIONAL.rawValue)))
            codes.append(easy.set(CURLOPT_NETRC_FILE, string: netrc))
        }
        if !tuning.resolve.isEmpty {
            resolveList = HeaderList(tuning.resolve)
            codes.append(easy.set(CURLOPT_RESOLVE, list: resolveList!.raw))
        }
        if let ca = tuning.caCertificatePath {
            codes.append(easy.set(CURLOPT_CAINFO, string: ca))
        }
        if tuning.verbose {
            // libcurl's own trace would print Authorization and cookies as sent; this one redacts.
            codes.append(easy.set(CURLOPT_VERBOSE, true))
            codes.append(spate_easy_setopt_debug_function(easy.raw, transferDebugCallback))
            codes.append(easy.set(CURLOPT_DEBUGDATA, pointer: me))
        }
        if let bad = codes.first(where: { $0 != CURLE_OK }) {
            return TransferOutcome(head: nil, stop: nil, curlCode: bad.rawValue,
                                   curlMessage: String(cString: curl_easy_strerror(bad)), bodyBytes: 0)
        }
        return nil
    }

    func outcome(code: CURLcode) -> TransferOutcome {
        var message = ""
        if code != CURLE_OK {
            message = easy.errorMessage
            if message.isEmpty { message = String(cString: curl_easy_strerror(code)) }
        }
        var outcome = TransferOutcome(head: head, stop: stop, curlCode: code.rawValue,
                                      curlMessage: message, bodyBytes: bodyBytes)
        if code == CURLE_COULDNT_CONNECT {
            var number = 0
            if spate_easy_getinfo_long(easy.raw, CURLINFO_OS_ERRNO, &number) == CURLE_OK { outcome.osErrno = Int32(truncatingIfNeeded: number) }
        }
        var microseconds: curl_off_t = 0
        if head != nil, spate_easy_getinfo_off_t(easy.raw, CURLINFO_STARTTRANSFER_TIME_T, &microseconds) == CURLE_OK {
            outcome.timeToFirstByte = .microseconds(Int64(microseconds))
            // The request's own wait: from the request sent (after connect and TLS) to the
            // first byte of the reply, what every request on a kept connection pays.
            var sent: curl_off_t = 0
            if spate_easy_getinfo_off_t(easy.raw, CURLINFO_PRETRANSFER_TIME_T, &sent) == CURLE_OK, microseconds >= sent {
                outcome.replyWait = .microseconds(Int64(microseconds - sent))
            }
        }
        return outcome
    }

    @inline(__always)
    func receiveHeaderLine(_ line: UnsafeRawBufferPointer) -> Bool {
        switch headBuilder.feed(line) {
        case .more:
            return true
        case .headComplete:
            let head = headBuilder.head!
            self.head = head
            attempts.answered(self, keepsConnection: headBuilder.keepsConnection)
            // A host that replies is up, for every download of the session (`HostOutages`),
            // now rather than when this transfer ends: a long range is a reply all along.
            if let origin = spec.origin { outages?.answered(origin) }
            if let stop = sink.accept(head) {
                self.stop = stop
                return false
            }
            return true
        case .tooLarge:
            stop = .invalid(InvalidReply(.malformedHead, "response headers are larger than \(ResponseHeadBuilder.maxHeaderBytes / 1024) KiB"))
            return false
        case .malformed:
            stop = .invalid(InvalidReply(.malformedHead, "malformed response header line"))
            return false
        }
    }

    /// The stall watchdog (`StallWatchdog`): libcurl calls the progress callback at least once a
    /// second, even when nothing arrives. Returns false to abort a stalled transfer.
    func checkStall() -> Bool {
        if handedOver { return true }  // paused until adopted (`adopt` starts a new window)
        if rateLimitedInWindow, let limit = watchdog?.limit {
            watchdog = StallWatchdog(limit: limit, now: clock.now, bodyBytes: bodyBytes)
            rateLimitedInWindow = rateLimited
            return true
        }
        guard watchdog?.isStalled(bodyBytes: bodyBytes, now: clock.now) == true, let limit = watchdog?.limit else { return true }
        stop = .stalled(limit)
        return false
    }

    /// What the write callback returns: every byte taken, none (abort), or pause.
    @inline(__always)
    func receiveBody(_ bytes: UnsafeRawBufferPointer) -> Int {
        guard head != nil else {
            stop = .invalid(InvalidReply(.malformedHead, "response body before a complete header"))
            return 0
        }
        bodyBytes += Int64(bytes.count)
        if let stop = sink.body(bytes) {
            if stop == .handOver {
                bodyBytes -= Int64(bytes.count)  // not taken: libcurl delivers them again
                return handOver()
            }
            self.stop = stop
            return 0
        }
        if let rate, rate.budget.spend(bytes.count, now: clock.now), !rateLimited {
            // In debt: stop reading this socket until the loop resumes it (allowed from
            // inside a callback). TCP holds the sender meanwhile.
            _ = curl_easy_pause(easy.raw, CURLPAUSE_RECV)
            rateLimited = true
            rateLimitedInWindow = true
            rate.paused.append(id)
        }
        return bytes.count
    }

    /// The sink handed the rest of the reply over: the transfer pauses (libcurl keeps the
    /// bytes of this call for later), and its caller gets the outcome now, with the handle to
    /// adopt it by.
    private func handOver() -> Int {
        guard let loop, let completion else {
            stop = .invalid(InvalidReply(.malformedHead, "a reply handed over twice (internal error)"))
            return 0
        }
        handedOver = true
        self.completion = nil
        var outcome = outcome(code: CURLE_OK)
        outcome.stop = .handOver
        outcome.handover = TransferHandover(id: id, loop: loop)
        completion.resume(with: .success(outcome))
        return Int(CURL_WRITEFUNC_PAUSE)
    }

    /// Takes the reply over for `sink`: returns the stop its `accept` gives the head (the
    /// transfer then ends), or nil to go on; the stall window starts again (the wait for the
    /// adoption was not the server's).
    func adopt(_ sink: any ResponseSink, completion: TransferCompletion) -> TransferStop? {
        self.sink = sink
        self.completion = completion
        handedOver = false
        if let limit = watchdog?.limit { watchdog = StallWatchdog(limit: limit, now: clock.now, bodyBytes: bodyBytes) }
        return head.flatMap { sink.accept($0) }
    }

    /// A span for this request on its connection's lane (its local port), if it reached the
    /// wire. The URL is redacted; header values are not recorded.
    func record(to trace: TraceRecorder, result: Result<TransferOutcome, any Error>) {
        var sent = 0, port = 0
        _ = spate_easy_getinfo_long(easy.raw, CURLINFO_REQUEST_SIZE, &sent)
        guard sent > 0 else { return }
        _ = spate_easy_getinfo_long(easy.raw, CURLINFO_LOCAL_PORT, &port)
        let range = spec.headers.first { $0.hasPrefix("Range: ") }.map { String($0.dropFirst("Range: ".count)) }
        // A redirect target's path may itself be the credential (a signed URL): its origin only.
        let url = spec.secretPath ? Redactor.originOnly(spec.url) : Redactor.urls(in: spec.url)
        var args: [(String, TraceValue)] = [("url", .text(url)), ("bytes", .integer(bodyBytes))]
        if let range { args.append(("range", .text(range))) }
        if let status = head?.status { args.append(("status", .integer(Int64(status)))) }
        let ending: String
        switch result {
        case .failure: ending = "cancelled"
        case .success(let outcome):
            if let first = outcome.timeToFirstByte { args.append(("ttfb_ms", .number(first.secondsDouble * 1000))) }
            if let stop = outcome.stop { ending = "\(stop)".prefix { $0 != "(" }.description }
            else { ending = outcome.curlCode == 0 ? "completed" : "curl error \(outcome.curlCode)" }
        }
        args.append(("end", .text(ending)))
        trace.span("GET \(range ?? "whole")", category: "request", start: started, end: clock.now, lane: port, args: args)
    }

    /// Held back by the connect gate until now: the stall watchdog's window starts now (the
    /// wait was not the server's).
    func releasedFromHold() {
        started = clock.now
        if let limit = watchdog?.limit { watchdog = StallWatchdog(limit: limit, now: clock.now) }
        // The host's connection count may have changed during the hold (set both ways).
        _ = easy.set(CURLOPT_FORBID_REUSE, hostOverBudget)
    }

    /// More connections are open to the host than its budget: this request closes its own
    /// afterwards instead of keeping it (the host throttles and must see them go).
    private var hostOverBudget: Bool {
        spec.hostBudget.map { sockets.count(opening.host) > $0 } ?? false
    }

    /// The rate budget's debt is repaid: read again.
    func resumeFromRateLimit() {
        guard rateLimited else { return }
        rateLimited = false
        _ = curl_easy_pause(easy.raw, CURLPAUSE_CONT)
    }
}

/// libcurl's write callback: returns the byte count to continue, anything else to abort.
private let transferWriteCallback: curl_write_callback = { data, size, count, context in
    let transfer = Unmanaged<Transfer>.fromOpaque(context!).takeUnretainedValue()
    let n = size * count
    return transfer.receiveBody(UnsafeRawBufferPointer(start: data, count: n))
}

/// `--verbose`: libcurl's trace, with secrets redacted, on stderr.
private let transferDebugCallback: curl_debug_callback = { _, type, data, size, context in
    guard let data, let context else { return 0 }
    let secretPath = Unmanaged<Transfer>.fromOpaque(context).takeUnretainedValue().spec.secretPath
    let text = String(decoding: UnsafeRawBufferPointer(start: data, count: size), as: UTF8.self)
    let prefix: String
    switch type {
    case CURLINFO_TEXT: prefix = "* "
    case CURLINFO_HEADER_OUT: prefix = "> "
    case CURLINFO_HEADER_IN: prefix = "< "
    default: return 0  // bodies and TLS data are not traced
    }
    var out = ""
    for line in text.split(omittingEmptySubsequences: true, whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" }) {
        let clean = String(line).trimmingSpaces()
        guard !clean.isEmpty else { continue }
        out += prefix + VerboseTrace.redact(clean, secretPath: secretPath) + "\n"
    }
    VerboseTrace.write(out)
    return 0
}

/// Redaction and output for the `--verbose` trace.
enum VerboseTrace {
    static func redact(_ line: String, secretPath: Bool) -> String {
        if line.hasPrefix("GET ") || line.hasPrefix("HEAD ") {
            // The request line carries the path and query: elide query values, and the whole
            // path of a redirect target.
            let parts = line.split(separator: " ", maxSplits: 2).map(String.init)
            if parts.count == 3 { return "\(parts[0]) \(secretPath ? "/…" : Redactor.url(parts[1])) \(parts[2])" }
        }
        if line.lowercased().hasPrefix("location:") {
            return "Location: " + Redactor.originOnly(String(line.dropFirst(9)).trimmingSpaces())
        }
        if line.lowercased().contains("proxy") {
            // libcurl names a proxy variable's value ("Uses proxy env variable https_proxy ==
            // 'user:password@proxy:3128'"), which may have no scheme for `Redactor.urls`.
            return Redactor.header(line).split(separator: " ", omittingEmptySubsequences: false).map { word in
                Self.withoutUserInfo(String(word))
            }.joined(separator: " ")
        }
        return Redactor.urls(in: Redactor.header(line))
    }

    /// `user:password@host` (with or without a scheme, quotes kept) as `***@host`.
    static func withoutUserInfo(_ word: String) -> String {
        guard let at = word.lastIndex(of: "@") else { return Redactor.urls(in: word) }
        var start = word.startIndex
        if let scheme = word.firstRange(of: "://"), scheme.upperBound <= at { start = scheme.upperBound }
        else if let quote = word.firstIndex(where: { $0 == "'" || $0 == "\"" }), quote < at { start = word.index(after: quote) }
        return String(word[..<start]) + "***" + String(word[at...])
    }

    static func write(_ text: String) {
        var bytes = Array(text.utf8)
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress! + done, $0.count - done) }
            if n <= 0 { return }
            done += n
        }
    }
}

/// libcurl's progress callback: non-zero aborts the transfer (the stall watchdog).
private let transferProgressCallback: curl_xferinfo_callback = { context, _, _, _, _ in
    let transfer = Unmanaged<Transfer>.fromOpaque(context!).takeUnretainedValue()
    return transfer.checkStall() ? 0 : 1
}

/// libcurl's header callback: one header line per call.
private let transferHeaderCallback: curl_write_callback = { data, size, count, context in
    let transfer = Unmanaged<Transfer>.fromOpaque(context!).takeUnretainedValue()
    let n = size * count
    return transfer.receiveHeaderLine(UnsafeRawBufferPointer(start: data, count: n)) ? n : 0
}

/// Lets one task stop a transfer another task is waiting on (the loser of a hedge, a range
/// whose bytes were fetched by someone else).
final class TransferHandle: Sendable {
    private struct State {
        var id: UInt64?
        var abandoned = false
    }
    private let state = Mutex(State())

    init() {}

    /// Records the transfer id and starts it (under this handle's lock, so an abandonment comes
    /// either before — nil, nothing started — or after the start command).
    fileprivate func attach<T>(_ id: UInt64, starting start: () -> T) -> T? {
        state.withLock { s in
            if s.abandoned { return nil }
            s.id = id
            return start()
        }
    }

    /// Marks the handle abandoned; returns the transfer id if it has started.
    fileprivate func markAbandoned() -> UInt64? {
        state.withLock { s in
            s.abandoned = true
            return s.id
        }
    }
}

/// A transfer paused after its sink handed the rest of its reply over (`TransferStop.handOver`),
/// for `CurlLoop.adopt`. Dropped without being adopted, it ends the transfer (its connection
/// closes) and gives back what it keeps (`keep`): whoever holds it may simply let it go.
final class TransferHandover: Sendable {
    private struct State {
        var taken = false
        /// Gives back the connection slot the paused transfer still holds.
        var release: (@Sendable () -> Void)?
    }

    let id: UInt64
    private let loop: CurlLoop
    private let state = Mutex(State())

    fileprivate init(id: UInt64, loop: CurlLoop) {
        self.id = id
        self.loop = loop
    }

    /// Keeps the paused transfer's connection slot with it: `release` runs when it is dropped,
    /// or is the adopter's (`takeRelease`). Why: the connection stays open while paused, so its
    /// place in the session's budgets must stay taken (given back, another request could take
    /// it and wait inside libcurl for a connection the paused one holds).
    func keep(release: @escaping @Sendable () -> Void) {
        state.withLock { $0.release = release }
    }

    /// The slot's release, for the adopter to call once the transfer has ended (nil when none
    /// was kept). Taken once.
    func takeRelease() -> (@Sendable () -> Void)? {
        state.withLock { s in
            defer { s.release = nil }
            return s.release
        }
    }

    /// Claims it for `adopt`; false when it was claimed before.
    fileprivate func take() -> Bool {
        state.withLock { s in
            defer { s.taken = true }
            return !s.taken
        }
    }

    deinit {
        let (taken, release) = state.withLock { ($0.taken, $0.release) }
        if !taken { loop.drop(handedOver: id) }
        release?()
    }
}
