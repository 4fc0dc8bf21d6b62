import Adapters
import Foundation
import Testing
@testable import Relay

/// The configuration's JSON5 reader: errors with line, column and a caret, duplicate keys, the whole grammar
/// (checked against Foundation's JSON5 decoder, code we did not write), and the paths and templates
/// `relay check` refuses.
@Suite("JSON5 reader and config paths")
struct JSON5Tests {
    static func error(_ text: String, showLines: Bool = true) -> JSON5Error? {
        do {
            _ = try JSON5.parse(text, showLines: showLines)
            return nil
        } catch {
            return error
        }
    }

    /// What the decoder the configuration used before gives (duplicate keys aside).
    static func foundation(_ data: Data) throws -> JSONValue {
        let decoder = JSONDecoder()
        decoder.allowsJSON5 = true
        return try decoder.decode(JSONValue.self, from: data)
    }

    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    // MARK: Syntax errors

    struct SyntaxCase: Sendable, CustomStringConvertible {
        var name: String
        var text: String
        var line: Int
        var column: Int
        var message: String
        var description: String { name }
    }

    static let syntaxCases: [SyntaxCase] = [
        SyntaxCase(name: "missing comma", text: "{\n  a: 1\n  b: 2\n}", line: 3, column: 3,
                   message: "expected ',' or '}' after an object member, found 'b'"),
        SyntaxCase(name: "missing comma in an array", text: "{ to: [\"a\"\n  \"b\"] }", line: 2, column: 3,
                   message: "expected ',' or ']' after an array item, found '\"'"),
        SyntaxCase(name: "unterminated string", text: "{\n  a: \"abc,\n  b: 1\n}", line: 2, column: 6,
                   message: "this string is not closed on its line"),
        SyntaxCase(name: "string open at the end of the file", text: "{ a: 'abc", line: 1, column: 6,
                   message: "this string is never closed (no closing ' before the end of the file)"),
        SyntaxCase(name: "bad escape", text: "{\n  pattern: \"\\d+\"\n}", line: 2, column: 13,
                   message: "unknown escape '\\d'"),
        SyntaxCase(name: "short \\x escape", text: "{ a: \"\\x4g\" }", line: 1, column: 10,
                   message: "\\x needs 2 hex digits (found 1)"),
        SyntaxCase(name: "octal escape", text: "{ a: \"\\12\" }", line: 1, column: 7, message: "octal escape"),
        SyntaxCase(name: "lone surrogate", text: "{ a: \"\\uD83D!\" }", line: 1, column: 7,
                   message: "first half of a surrogate pair"),
        SyntaxCase(name: "block comment never closed starts where it opens",
                   text: "{\n  a: 1, /* note\n  b: 2\n\n", line: 2, column: 9,
                   message: "this /* comment is never closed"),
        SyntaxCase(name: "the file ends inside an object", text: "{\n  a: { b: 1,\n\n", line: 2, column: 13,
                   message: "expected a key or '}', found the end of the file (the '{' at line 2, column 6 is never closed)"),
        SyntaxCase(name: "key with a dash unquoted", text: "{ github-style: {} }", line: 1, column: 9,
                   message: "expected ':' after the key \"github\", found '-' (a key with other characters"),
        SyntaxCase(name: "text without quotes", text: "{ level: info }", line: 1, column: 10,
                   message: "expected a value (an object, array, string, number, true, false or null), found 'info' (text needs quotes"),
        SyntaxCase(name: "two commas", text: "{ a: 1,, }", line: 1, column: 8,
                   message: "expected a key (a name or a quoted string) or '}', found ','"),
        SyntaxCase(name: "Infinity", text: "{ a: -Infinity }", line: 1, column: 6, message: "-Infinity is not allowed"),
        SyntaxCase(name: "NaN", text: "[NaN]", line: 1, column: 2, message: "NaN is not allowed"),
        SyntaxCase(name: "leading zero", text: "{ a: 007 }", line: 1, column: 6, message: "a number cannot start with 0"),
        SyntaxCase(name: "number too large", text: "{ a: 1e400 }", line: 1, column: 6, message: "too large"),
        SyntaxCase(name: "letters after a number", text: "{ a: 5px }", line: 1, column: 7, message: "found 'px'"),
        SyntaxCase(name: "text after the value", text: "{}\n}", line: 2, column: 1,
                   message: "expected the end of the file after the top-level value, found '}'"),
        SyntaxCase(name: "empty file", text: "  // nothing\n", line: 2, column: 1, message: "the file has no value"),
        SyntaxCase(name: "CRLF and CR line ends count once", text: "{\r\n  a: 1,\r\n\r  b 2 }", line: 4, column: 5,
                   message: "expected ':' after the key \"b\", found '2'"),
        SyntaxCase(name: "a byte order mark is not a column", text: "\u{FEFF}{ a: 1 b }", line: 1, column: 8,
                   message: "found 'b'"),
        SyntaxCase(name: "columns count characters, not bytes", text: "{ naïve: \"é\" x }", line: 1, column: 14,
                   message: "found 'x'"),
    ]

    @Test("syntax errors give line, column and what was expected", arguments: syntaxCases)
    func syntaxErrors(_ c: SyntaxCase) throws {
        let e = try #require(Self.error(c.text), "\(c.name) parsed")
        #expect(e.kind == .syntax)
        #expect(e.line == c.line && e.column == c.column, "\(c.name): at \(e.line):\(e.column): \(e.message)")
        #expect(e.message.contains(c.message), "\(c.name): \(e.message)")
        #expect(e.summary.hasPrefix("line \(c.line), column \(c.column): "), "\(e.summary)")
    }

    @Test("the error shows the line and a caret under the column")
    func caret() throws {
        let text = "{\n  sources: {\n    a: { adapter: \"generic\" x },\n  },\n}\n"
        let e = try #require(Self.error(text))
        #expect(e.description == """
            line 3, column 29: expected ',' or '}' after an object member, found 'x'
              3 |     a: { adapter: "generic" x },
                |                             ^
            """)
        #expect(e.keyPath == "sources.a")
        #expect(e.lineText == "    a: { adapter: \"generic\" x },")

        // Tabs are copied into the caret line, so the caret lands under the column in any terminal.
        let tabbed = try #require(Self.error("{\n\t\ta: 1 b\n}"))
        #expect(tabbed.snippet == "  2 | \t\ta: 1 b\n    | \t\t     ^", "\(tabbed.description)")

        // A very long line (a minified file) is cut around the column.
        let long = "{ " + (0..<100).map { "k\($0): \($0)," }.joined(separator: " ") + " last: 1 oops }"
        let cut = try #require(Self.error(long))
        let lines = try #require(cut.snippet).split(separator: "\n").map(String.init)
        #expect(lines.count == 2 && lines[0].count < 140 && lines[0].hasPrefix("  1 | ...") && lines[0].contains("oops"), "\(lines)")
        let caretAt = try #require(lines[1].firstIndex(of: "^")).utf16Offset(in: lines[1])
        let oopsAt = try #require(lines[0].range(of: "oops")).lowerBound.utf16Offset(in: lines[0])
        #expect(caretAt == oopsAt, "\(cut.description)")
    }

    @Test("showLines: false never echoes the file's text")
    func hiddenLines() throws {
        let secret = "hunter2-\(UInt32.random(in: 0...UInt32.max))"
        let cases = [
            "{\n  password: \"\(secret)\" \(secret)\n}",
            "{\n  password: \(secret)\n}",
            "{\n  password: \"\(secret)\\q\"\n}",
            "{\n  password: \"\(secret)\n}",
            "{ \(secret)-x: 1 }",
        ]
        for text in cases {
            let e = try #require(Self.error(text, showLines: false), "\(text)")
            #expect(e.lineText == nil && e.snippet == nil)
            #expect(!e.description.contains(secret) && !e.description.contains("hunter"), "\(e.description)")
            #expect(e.description.hasPrefix("line "), "\(e.description)")
            let shown = try #require(Self.error(text, showLines: true))
            #expect(shown.line == e.line && shown.column == e.column)
        }
    }

    @Test("not UTF-8: the first bad byte's position")
    func invalidUTF8() throws {
        var bytes = Array("{\n  a: \"x".utf8)
        bytes += [0xC3, 0x28]
        bytes += Array("\" }".utf8)
        do {
            _ = try JSON5.parse(bytes)
            Issue.record("parsed")
        } catch {
            #expect(error.line == 2 && error.column == 8 && error.message.contains("not UTF-8"), "\(error)")
        }
    }

    @Test("nesting beyond maxDepth is refused, not a crash")
    func depth() throws {
        let deep = String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)
        let e = try #require(Self.error(deep))
        #expect(e.message.contains("nested more than"))
    }

    // MARK: Duplicate keys

    @Test("a key given twice is an error naming both lines and its key path")
    func duplicateKeys() throws {
        let top = try #require(Self.error("{\n  log: { level: \"info\" },\n  sources: {},\n  log: {},\n}"))
        #expect(top.kind == .duplicateKey(key: "log", firstLine: 2, firstColumn: 3))
        #expect(top.keyPath == "log" && top.line == 4 && top.column == 3)
        #expect(top.summary == "log: duplicate key \"log\" (first at line 2, again at line 4)")
        #expect(top.snippet == "  4 |   log: {},\n    |   ^")

        let text = """
            {
              destinations: {
                // the first block
                capillary: {
                  adapter: "capillary",
                },
                other: { adapter: "generic" },
                'capillary': { adapter: "generic" },
              },
            }
            """
        let nested = try #require(Self.error(text))
        #expect(nested.keyPath == "destinations.capillary")
        #expect(nested.message == "duplicate key \"capillary\" (first at line 4, again at line 8)")
        #expect(nested.description.hasPrefix("destinations.capillary: duplicate key \"capillary\" (first at line 4, again at line 8)\n  8 |     'capillary'"), "\(nested.description)")

        // In an array item, keys written differently but equal, and on one line.
        let inArray = try #require(Self.error(#"{ routes: [ { from: "a" }, { from: "a", to: [], \u0066rom: "b" } ] }"#))
        #expect(inArray.keyPath == "routes[1].from")
        #expect(inArray.message == "duplicate key \"from\" (first at line 1, column 30, again at column 49)", "\(inArray.message)")

        // Odd keys are quoted in the path the way every other problem names them.
        let odd = try #require(Self.error(#"{ sources: { "my source": {}, "my source": {} } }"#))
        #expect(odd.keyPath == #"sources["my source"]"#)
    }

    @Test("relay config: a duplicate block is a problem at its key path, not a silently dropped block")
    func duplicateInConfig() throws {
        let text = """
            {
              sources: { a: { adapter: "generic", verify: { none: true } } },
              destinations: {
                capillary: { adapter: "generic", url: "https://one.example/" },
                capillary: { adapter: "generic", url: "https://two.example/" },
              },
            }
            """
        let error = try #require(throws: ConfigError.self) {
            try RelayConfig.parse(Data(text.utf8), registry: BuiltinAdapters.registry, environment: [:])
        }
        #expect(error.problems.count == 1)
        #expect(error.problems[0].path == "destinations.capillary")
        #expect(error.problems[0].message.hasPrefix("duplicate key \"capillary\" (first at line 4, again at line 5)\n  5 |"), "\(error)")
    }

    // MARK: The grammar

    @Test("every JSON5 feature reads to the value it stands for")
    func grammar() throws {
        let text = """
            \u{FEFF}// a comment
            /* a block
               comment */ {
              unquoted: 'single "quoted"',
              "double": "it's",
              $dollar_and_under: 1,
              café: true,
              \\u0061bc: null,
              escapes: "\\b\\f\\n\\r\\t\\v\\0\\'\\"\\\\\\/\\x41\\u00e9\\uD83D\\uDE00",
              continued: "one \\
            two",
              numbers: [0x1F, -0x10, .5, 5., +3, -0, 1e3, 1E-2, 0.1e+1, 9007199254740993, 1.7976931348623157e308],
              nested: { list: [1, [2, [3,],], {},], },
              nbsp:\u{00A0}"after a no-break space",
              trailing: 'comma',
            }
            // the end
            """
        let v = try JSON5.parse(text)
        let want: JSONValue = .object([
            "unquoted": .string("single \"quoted\""),
            "double": .string("it's"),
            "$dollar_and_under": .number(1),
            "café": .bool(true),
            "abc": .null,
            "escapes": .string("\u{8}\u{C}\n\r\t\u{B}\u{0}'\"\\/Aé😀"),
            "continued": .string("one two"),
            "numbers": .array([.number(31), .number(-16), .number(0.5), .number(5), .number(3), .number(-0.0),
                               .number(1000), .number(0.01), .number(1), .number(9007199254740992),
                               .number(1.7976931348623157e308)]),
            "nested": .object(["list": .array([.number(1), .array([.number(2), .array([.number(3)])]), .object([:])])]),
            "nbsp": .string("after a no-break space"),
            "trailing": .string("comma"),
        ])
        #expect(v == want, "\(v.jsonString())")
        // Scalars at the top level, and line separators as whitespace.
        #expect(try JSON5.parse("\u{2028} 'x' \u{2029}") == .string("x"))
        #expect(try JSON5.parse("-.5e1") == .number(-5))
    }

    /// A sample of the config-shaped JSON5 Foundation's decoder reads too: both must give the same tree. (Not a
    /// line continuation: Foundation keeps the line break, where JSON5 and ECMAScript say it stands for nothing;
    /// `grammar` checks ours.)
    static let foundationSample = """
        // relay configuration, every feature both readers know
        {
          server: { listen: "127.0.0.1:8080", maxBodyBytes: 0x100000, idleTimeout: 30., requestTimeout: .5, },
          store: { sqlite: 'data/relay.db', commitDelay: "2ms", maxBatch: +256 },
          log: { level: 'debug' },
          sources: {
            "github-style": {
              adapter: "generic",
              verify: { preset: "github", secrets: ["${env:GH}", '${file:/run/secrets/gh}',], },
              map: { subject: { orderId: "$.order.id", lines: "$.order.lines[0].sku" }, status: "$.order.state" },
              statusMap: { "PLACED": "placed", 'SHIPPED': "shipped", },
              description: "\\x41\\u00e9 \\"quoted\\" \\'single\\' tab\\tend",
            },
          },
          destinations: {
            acme: { adapter: "generic", url: "https://api.example/${subject.orderId}", retry: { schedule: ["1s", "5s",] },
                    numbers: [1, -2, 3.25, 1e3, -1.5E-3, 12345678901234567890, 9007199254740993, 0xff, -0x0A, 1.7976931348623157e308, 5e-324] },
          },
          /* routes */
          routes: [ { from: "github-style", to: ["acme"], when: { status: ["shipped"] } }, ],
          unicode: "héllo wörld ✓ 😀 \\ud83d\\ude00",
        }
        """

    @Test("the same tree as Foundation's JSON5 decoder: a sample with every feature both read")
    func agreesWithFoundationOnSample() throws {
        let ours = try JSON5.parse(Self.foundationSample)
        // JSONValue's Decodable keeps an integer past 2^53 as its digits (stored events must not change); the
        // JSON5 reader rounds it to a Double, as Foundation's own JSON5 numbers are.
        func doubles(_ v: JSONValue) -> JSONValue {
            switch v {
            case .integer(let digits): return .number(Double(digits)!)
            case .array(let a): return .array(a.map(doubles))
            case .object(let o): return .object(o.mapValues(doubles))
            default: return v
            }
        }
        let theirs = doubles(try Self.foundation(Data(Self.foundationSample.utf8)))
        #expect(ours == theirs, "ours: \(ours.jsonString())\ntheirs: \(theirs.jsonString())")
    }

    static func repoConfigFiles() -> [String] {
        let fm = FileManager.default
        var files: [String] = []
        for dir in ["config", "config/partners"] {
            for name in (try? fm.contentsOfDirectory(atPath: root + "/" + dir)) ?? [] where name.hasSuffix(".json5") {
                files.append(dir + "/" + name)
            }
        }
        files.append("docs/deploy/relay.json5")
        return files.sorted()
    }

    @Test("the same tree as Foundation's JSON5 decoder for every configuration in the repository")
    func agreesWithFoundationOnRepoFiles() throws {
        let files = Self.repoConfigFiles()
        #expect(files.count >= 9, "\(files)")
        for file in files {
            let data = try #require(FileManager.default.contents(atPath: Self.root + "/" + file), "\(file)")
            let ours = try JSON5.parse(data)
            let theirs = try Self.foundation(data)
            #expect(ours == theirs, "\(file)")
        }
    }

    @Test("JSONValue.parse(json5:) reads through the same reader")
    func jsonValueParse() throws {
        #expect(try JSONValue.parse(Data("{a: 1,}".utf8), json5: true) == .object(["a": .number(1)]))
        #expect(throws: JSON5Error.self) { try JSONValue.parse(Data("{a: 1, a: 2}".utf8), json5: true) }
    }

    // MARK: JSON paths

    static let validPaths = ["$", "$.order.id", "$.order.lines[0].sku", "$.data[12]", "$['odd key'].x", #"$["a.b"]"#,
                             "$.requests.request.get(0).id", "$.a-b.c_d.$ref", "$.payload.redemption_code.transaction_no"]
    static let invalidPaths: [(String, String)] = [
        ("$.order.", "ends with '.'"),
        ("$..x", "has '..'"),
        ("$.a[", "has a '[' that is never closed"),
        ("$.a[x]", "has [x], which is neither an index ([0]) nor a quoted key"),
        ("order.id", "does not start with $"),
        ("$order", "needs '.' or '[' before 'o'"),
        ("$.a[*].b", "wildcards"),
        ("$.a[-1]", "negative index"),
        ("$.a[?(@.x)]", "filter"),
        ("$.a.[0]", "has '.['"),
        ("$.a]", "']' without a '['"),
        ("$.first name", "has a space in the name"),
        ("$.a.get(x)", "not an index step"),
        ("$.a.size()", "parentheses"),
        ("$.a['b]", "not quoted properly"),
        (" $.a", "spaces around it"),
        ("", "is empty"),
    ]

    @Test("JSONPath.validate accepts the syntax the evaluator reads and refuses the rest with a reason")
    func pathValidation() {
        for p in Self.validPaths { #expect(JSONPath.validate(p) == nil, "\(p): \(JSONPath.validate(p) ?? "")") }
        for (p, reason) in Self.invalidPaths {
            let got = JSONPath.validate(p)
            #expect(got?.contains(reason) == true, "\(p): \(got ?? "accepted")")
        }
        // Route conditions name fields of the canonical event without $; contextKeys speak of the response.
        for p in ["type", "subject.orderId", "attributes.items[0].sku", "$.status", "attributes.get(0)"] {
            #expect(JSONPath.validate(p, form: .field) == nil, "\(p)")
        }
        for p in ["subject.", "attributes..x", "attributes[", ""] { #expect(JSONPath.validate(p, form: .field) != nil, "\(p)") }
        for p in ["response.coupon.code", "response.requests.request.get(0).id", "response.a[0]", "$.order.id",
                  "response.headers.Location", "response.headers.X-Request-Id"] {
            #expect(JSONPath.validate(p, form: .response) == nil, "\(p): \(JSONPath.validate(p, form: .response) ?? "")")
        }
        for p in ["coupon.code", "response.", "response.headers.", "response.headers.Bad Name", "response.a..b", "response.a["] {
            #expect(JSONPath.validate(p, form: .response) != nil, "\(p)")
        }
    }

    @Test(".get(N) is an index step, the same as [N]")
    func getIndex() throws {
        let v = try JSONParser.parse(Array(#"{"requests":{"request":[{"id":"R-1"},{"id":"R-2"}]},"m":{"0":"zero"}}"#.utf8))
        #expect(v.value(atPath: "$.requests.request.get(0).id") == .string("R-1"))
        #expect(v.value(atPath: "$.requests.request.get(1).id") == v.value(atPath: "$.requests.request[1].id"))
        #expect(v.value(atPath: "$.requests.request.get(2).id") == nil)
        #expect(v.value(atPath: "$.m.get(0)") == v.value(atPath: "$.m[0]"))
        // Through a generic destination's contextKeys, in Capillary's spelling.
        let (d, problems) = makeDestination("generic", #"{ url: "https://x/", contextKeys: { id: "response.requests.request.get(1).id" } }"#)
        #expect(problems.isEmpty, "\(problems)")
        let dest = try #require(d)
        let event = sampleEvent()
        let response = OutboundResponse(status: 200, body: Array(#"{"requests":{"request":[{"id":"R-1"},{"id":"R-2"}]}}"#.utf8))
        let outcome = dest.outcome(response, event: event, context: testContext)
        #expect(outcome.values["id"] == "R-2", "\(outcome)")
    }

    /// Problems of a whole configuration, as `path: message`.
    static func configProblems(_ text: String) -> [String] {
        do {
            _ = try RelayConfig.parse(Data(text.utf8), registry: BuiltinAdapters.registry, environment: ["P": "$.order.id"])
            return []
        } catch let error as ConfigError {
            return error.problems.map(\.description)
        } catch {
            return ["\(error)"]
        }
    }

    @Test("relay check refuses malformed JSON paths wherever a configuration reads one, at the key path")
    func malformedPathsInConfig() {
        let text = """
            {
              sources: {
                g: { adapter: "generic", verify: { none: true }, idempotency: { field: "$.id." },
                     map: { type: "$..event", status: "$.order[", occurredAt: "order.at",
                            subject: { orderId: "$.order.id", bad: "$.a[x]" }, attributes: { t: "$.order.", ok: "${env:P}" } } },
                c: { adapter: "capillary", verify: { none: true },
                     map: { status: "$.state.", subject: { rewardId: "$.reward..id" }, attributes: { e: "$.email[" } } },
                p: { adapter: "punchh", verify: { none: true }, map: { status: "$.payload.", subject: { code: "$.a[*]" } } },
              },
              destinations: {
                d: { adapter: "generic", url: "https://x.example/",
                     responses: [{ body: { "$.ok.": false }, result: "terminal" }],
                     contextKeys: { a: "response.", b: "response.order..id", c: "response.headers.", d: "coupon.code", e: "response.requests.request.get(0).id" } },
              },
              routes: [ { from: "g", to: ["d"], when: { match: [ { field: "subject.", exists: true } ] } } ],
            }
            """
        let problems = Self.configProblems(text)
        let expected: [(String, String)] = [
            ("sources.g.idempotency.field", "ends with '.'"),
            ("sources.g.map.type", "has '..'"),
            ("sources.g.map.status", "never closed"),
            ("sources.g.map.occurredAt", "does not start with $"),
            ("sources.g.map.subject.bad", "neither an index"),
            ("sources.g.map.attributes.t", "ends with '.'"),
            ("sources.c.map.status", "ends with '.'"),
            ("sources.c.map.subject.rewardId", "has '..'"),
            ("sources.c.map.attributes.e", "never closed"),
            ("sources.p.map.status", "ends with '.'"),
            ("sources.p.map.subject.code", "wildcards"),
            ("destinations.d.responses[0].body[\"$.ok.\"]", "ends with '.'"),
            ("destinations.d.contextKeys.a", "names nothing after response."),
            ("destinations.d.contextKeys.b", "has '..'"),
            ("destinations.d.contextKeys.c", "names no header"),
            ("destinations.d.contextKeys.d", "does not start with response. or $"),
            ("routes[0].when.match[0].field", "ends with '.'"),
        ]
        for (path, reason) in expected {
            #expect(problems.contains { $0.hasPrefix(path + ": ") && $0.contains(reason) }, "no \(path) (\(reason)) in:\n\(problems.joined(separator: "\n"))")
        }
        #expect(problems.count == expected.count, "\(problems.joined(separator: "\n"))")
    }

    @Test("relay check refuses malformed templates at their key path")
    func malformedTemplatesInConfig() {
        let cases: [(String, String)] = [
            ("https://x/${unclosed", "unterminated placeholder"),
            ("https://x/${}", "empty or malformed placeholder"),
            ("https://x/${subject.}", "empty or malformed placeholder"),
            ("https://x/${nope.x}", "unknown placeholder"),
            ("https://x/${id.x}", "id is text, without fields"),
            ("https://x/${subject}", "name the subject key"),
            ("https://x/${subject.a.b}", "a subject key is text"),
            ("https://x/${providerStatus.name}", "providerStatus has code and label"),
            ("https://x/${delivery.when}", "delivery has id, attempt and destination"),
            ("https://x/${context}", "name the value"),
            ("https://x/${subject.order id}", "cannot hold spaces"),
            ("https://x/${a${b}}", "cannot be nested"),
            ("https://x/${raw.items[0]}", "an index is written .0"),
            ("https://x/${subject.orderId??}", "only the end of a placeholder may be ?"),
        ]
        for (url, reason) in cases {
            let problems = Self.configProblems("""
                { sources: { a: { adapter: "generic", verify: { none: true } } },
                  destinations: { d: { adapter: "generic", url: "\(url)" } } }
                """)
            #expect(problems.contains { $0.hasPrefix("destinations.d.url: ") && $0.contains(reason) }, "\(url): \(problems)")
        }
        // Still accepted: every form the docs and adapters use.
        for url in ["https://x/${subject.orderId}", "https://x/${raw.order.lines.0.sku}", "https://x/${attributes.a.b?}",
                    "https://x/${providerStatus.code}/${delivery.attempt}/${context.mappedStatus}/${mappedStatus}",
                    "https://x/${ id }"] {
            let problems = Self.configProblems("""
                { sources: { a: { adapter: "generic", verify: { none: true } } },
                  destinations: { d: { adapter: "generic", url: "\(url)" } } }
                """)
            #expect(problems.isEmpty, "\(url): \(problems)")
        }
    }

    // MARK: relay check

    @Test("relay check prints the line, column and caret of a JSON5 error and the lines of a duplicate key")
    func checkCommand() throws {
        let dir = try TempDir("relay-json5")
        defer { dir.remove() }
        let bad = try dir.write("bad.json5", """
            {
              sources: {
                a: { adapter: "generic" verify: { none: true } },
              },
            }
            """)
        let (status, stdout, stderr) = try RelayProcess.run(["check", "--config", bad], dir: dir, label: "syntax")
        #expect(status == 2, "stdout: \(stdout)\nstderr: \(stderr)")
        #expect(stderr == """
            \(bad): 1 problem
              line 3, column 29: expected ',' or '}' after an object member, found 'verify'
                3 |     a: { adapter: "generic" verify: { none: true } },
                  |                             ^

            """, "\(stderr)")

        // relay serve's stderr is a log: the position, never the line (it may hold a secret typed inline).
        let serve = try RelayProcess.run(["serve", "--config", bad], dir: dir, label: "serve")
        #expect(serve.status == 2)
        #expect(serve.stderr.contains("line 3, column 29: expected ',' or '}' after an object member, found a letter"), "\(serve.stderr)")
        #expect(!serve.stderr.contains("generic") && !serve.stderr.contains("^"), "\(serve.stderr)")

        let dup = try dir.write("dup.json5", """
            {
              sources: { a: { adapter: "generic", verify: { none: true } } },
              destinations: {
                capillary: { adapter: "generic", url: "https://one.example/" },
                capillary: { adapter: "generic", url: "https://two.example/" },
              },
            }
            """)
        let d = try RelayProcess.run(["check", "--config", dup], dir: dir, label: "dup")
        #expect(d.status == 2)
        #expect(d.stderr.contains("  destinations.capillary: duplicate key \"capillary\" (first at line 4, again at line 5)\n    5 |     capillary:"), "\(d.stderr)")
    }
}
