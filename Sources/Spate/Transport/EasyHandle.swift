import CCurl

/// One libcurl easy handle (`CURL *`), confined to the transfer loop's thread.
///
/// `CURL *` and `CURLM *` both import as `UnsafeMutableRawPointer`; wrapping each in its own type
/// makes mixing them up a compile error.
final class EasyHandle {
    let raw: UnsafeMutableRawPointer
    /// libcurl's human-readable reason for the last failure (`CURLOPT_ERRORBUFFER`).
    let errorBuffer: UnsafeMutablePointer<CChar>

    init() {
        guard let raw = curl_easy_init() else { fatalError("curl_easy_init failed: out of memory") }
        self.raw = raw
        errorBuffer = .allocate(capacity: Int(CURL_ERROR_SIZE))
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE))
    }

    deinit {
        curl_easy_cleanup(raw)
        errorBuffer.deallocate()
    }

    /// Forgets every option (the connection cache lives in the multi handle and survives).
    func reset() {
        curl_easy_reset(raw)
        errorBuffer[0] = 0
    }

    var errorMessage: String { String(cString: errorBuffer) }

    @discardableResult
    func set(_ option: CURLoption, _ value: Int) -> CURLcode {
        spate_easy_setopt_long(raw, option, value)
    }

    @discardableResult
    func set(_ option: CURLoption, _ value: Bool) -> CURLcode {
        spate_easy_setopt_long(raw, option, value ? 1 : 0)
    }

    @discardableResult
    func set(_ option: CURLoption, string value: String) -> CURLcode {
        // libcurl copies string options (since 7.17.0), so a temporary C string is enough.
        spate_easy_setopt_string(raw, option, value)
    }

    @discardableResult
    func set(_ option: CURLoption, pointer value: UnsafeMutableRawPointer?) -> CURLcode {
        spate_easy_setopt_pointer(raw, option, value)
    }

    @discardableResult
    func set(_ option: CURLoption, list value: UnsafeMutablePointer<curl_slist>?) -> CURLcode {
        spate_easy_setopt_slist(raw, option, value)
    }

    @discardableResult
    func set(_ option: CURLoption, callback: curl_write_callback) -> CURLcode {
        spate_easy_setopt_write_function(raw, option, callback)
    }

    func info(long what: CURLINFO) -> Int {
        var value = 0
        _ = spate_easy_getinfo_long(raw, what, &value)
        return value
    }

    func info(pointer what: CURLINFO) -> UnsafeMutableRawPointer? {
        var value: UnsafeMutableRawPointer?
        _ = spate_easy_getinfo_pointer(raw, what, &value)
        return value
    }
}

/// A `curl_slist` of header lines, freed when the owner is done with the transfer.
struct HeaderList {
    private(set) var raw: UnsafeMutablePointer<curl_slist>?

    init(_ lines: [String]) {
        for line in lines { raw = curl_slist_append(raw, line) }
    }

    func free() { curl_slist_free_all(raw) }
}

/// libcurl process-wide initialisation, done exactly once before any handle exists.
enum CurlGlobal {
    private static let initialised: Bool = {
        curl_global_init(Int(CURL_GLOBAL_ALL)) == CURLE_OK
    }()

    static func ensureInitialised() {
        precondition(initialised, "curl_global_init failed")
    }

    /// The libcurl version string (e.g. "7.88.1").
    static var version: String {
        ensureInitialised()
        return String(cString: curl_version_info(CURLversion(rawValue: spate_curlversion_now())).pointee.version)
    }
}
