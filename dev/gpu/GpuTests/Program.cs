using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Reflection;
using Kvq.Cuda;
using Xunit;
using Xunit.Abstractions;
using Xunit.Sdk;

namespace Kvq.GpuTests;

/// <summary>Runs the tests of Kvq.Cuda.Tests without xunit's runners, so that they run as one NativeAOT binary on the
/// GPU machine (no .NET there; dev/gpu/stage-gpu-tests.sh publishes it, dev/gpu/device-gpu-tests.sh runs it).
/// What it honours of xunit 2: <c>[Fact]</c> and its subclasses (<c>[GpuFact]</c>; <c>Skip</c> makes a SKIP with the
/// reason), <c>[Theory]</c> with any data attribute (<c>[InlineData]</c>, <c>[MemberData]</c>, <c>[ClassData]</c>; a
/// row's own <c>Skip</c>), a new instance of the class per test, constructors that take an <see cref="ITestOutputHelper"/>
/// (written to stdout) or class fixtures (one instance per class, disposed at the end), <see cref="IAsyncLifetime"/>,
/// <see cref="IDisposable"/> and <see cref="IAsyncDisposable"/>, methods returning <see cref="Task"/> or
/// <see cref="ValueTask"/>. Tests run one at a time, classes in name order, methods in declaration order.
/// The test assembly is a trimming root (GpuTests.csproj), so its types, methods and attributes are all there.</summary>
public static class Program
{
    private sealed record TestCase(Type Class, MethodInfo Method, object?[] Args, string Name, string? Skip);

    public static int Main(string[] args)
    {
        var filters = new List<string>();
        bool list = false, noSkip = false;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--filter" when i + 1 < args.Length: filters.Add(args[++i]); break;
                case "--list": list = true; break;
                case "--no-skip": noSkip = true; break;
                case "-h" or "--help":
                    Console.WriteLine("""
                        GpuTests [--filter TEXT]... [--list] [--no-skip]
                          Runs the tests of Kvq.Cuda.Tests (xunit 2 attributes) in this process: one line per test,
                          PASS/FAIL/SKIP with the time or the reason, then a summary.
                          --filter TEXT  only tests whose full name contains TEXT (several: any of them)
                          --list         print the tests found, run nothing
                          --no-skip      a skipped test counts as a failure (on a GPU machine: every GpuFact must run)
                        Exit code: 0 when every test run passed (and none skipped, with --no-skip), 1 otherwise, 2 on bad
                        arguments or when no test matches.
                        """);
                    return 0;
                default:
                    Console.Error.WriteLine($"unknown argument: {args[i]} (--help)");
                    return 2;
            }
        }

        var assembly = typeof(Cuda.Tests.GpuFactAttribute).Assembly;
        List<TestCase> tests;
        try { tests = Discover(assembly); }
        catch (Exception e)
        {
            Console.WriteLine($"FAIL  discovery: {e}");
            return 1;
        }
        if (filters.Count > 0) tests = tests.Where(t => filters.Any(f => t.Name.Contains(f, StringComparison.OrdinalIgnoreCase))).ToList();
        if (tests.Count == 0)
        {
            Console.WriteLine("no tests found" + (filters.Count > 0 ? $" matching {string.Join(", ", filters)}" : ""));
            return 2;
        }
        if (list)
        {
            foreach (var t in tests) Console.WriteLine(t.Skip is null ? t.Name : $"{t.Name}  [skip: {t.Skip}]");
            Console.WriteLine($"{tests.Count} tests");
            return 0;
        }

        Console.WriteLine($"{assembly.GetName().Name} {assembly.GetName().Version}: {tests.Count} tests; {Environment.ProcessorCount} threads; {Device()}");
        if (AssertionsMisbehave() is { } broken)
        {
            Console.WriteLine($"FAIL  self-check: {broken}");
            return 1;
        }
        Console.WriteLine("self-check: xunit's assertions pass on equal values and fail on different ones in this binary");
        var total = Stopwatch.StartNew();
        int passed = 0, failed = 0, skipped = 0;
        var failures = new List<string>();
        var fixtures = new Dictionary<Type, object>();
        foreach (var t in tests)
        {
            if (t.Skip is not null)
            {
                Console.WriteLine($"SKIP  {t.Name}: {t.Skip}");
                skipped++;
                continue;
            }
            var watch = Stopwatch.StartNew();
            var error = Run(t, fixtures);
            var secs = watch.Elapsed.TotalSeconds;
            if (error is null)
            {
                Console.WriteLine($"PASS  {t.Name} ({secs:F3} s)");
                passed++;
            }
            else
            {
                Console.WriteLine($"FAIL  {t.Name} ({secs:F3} s)");
                Console.WriteLine(Indent(error.ToString()));
                failed++;
                failures.Add(t.Name);
            }
        }
        foreach (var f in fixtures.Values)
        {
            try
            {
                if (f is IAsyncLifetime life) life.DisposeAsync().GetAwaiter().GetResult();
                Cleanup(f);
            }
            catch (Exception e) { Console.WriteLine($"FAIL  disposing fixture {f.GetType().FullName}: {e.Message}"); failed++; }
        }
        Console.WriteLine($"{tests.Count} tests: {passed} passed, {failed} failed, {skipped} skipped ({total.Elapsed.TotalSeconds:F1} s)");
        foreach (var n in failures) Console.WriteLine($"  failed: {n}");
        if (noSkip && skipped > 0) Console.WriteLine($"--no-skip: {skipped} skipped tests count as failures");
        return failed > 0 || (noSkip && skipped > 0) ? 1 : 0;
    }

    /// <summary>xunit.assert compares collections by reflection (GpuTests.csproj): whether, in this binary, what the
    /// tests compare still passes when equal and throws when not. Null when it does; else what went wrong.</summary>
    private static string? AssertionsMisbehave()
    {
        int[] ints = [1, 2, 3];
        byte[] bytes = [1, 2, 3];
        string[] names = ["a.cubin"];
        var checks = new (string Name, Action Equal, Action Different)[]
        {
            ("int[]", () => Assert.Equal(ints, new[] { 1, 2, 3 }), () => Assert.Equal(ints, new[] { 1, 2, 4 })),
            ("byte[]", () => Assert.Equal(bytes, new byte[] { 1, 2, 3 }), () => Assert.Equal(bytes, new byte[] { 1, 2 })),
            ("string[] vs IEnumerable<string?>", () => Assert.Equal(names, names.Select(n => (string?)n)), () => Assert.Equal(names, new[] { "b.cubin" }.Select(n => (string?)n))),
            ("float[]", () => Assert.Equal(new[] { 1f, 2f }, new[] { 1f, 2f }), () => Assert.Equal(new[] { 1f, 2f }, new[] { 1f, 2.5f })),
            ("long[] vs List<long>", () => Assert.Equal(new[] { 1L, 2L }, new List<long> { 1, 2 }), () => Assert.Equal(new[] { 1L, 2L }, new List<long> { 1, 3 })),
            ("double", () => Assert.Equal(1.0, 1.0), () => Assert.Equal(1.0, 1.5)),
            ("All", () => Assert.All(bytes, b => Assert.InRange(b, (byte)1, (byte)3)), () => Assert.All(bytes, b => Assert.Equal(1, b))),
            ("Contains", () => Assert.Contains("q4", "no q4_0 here"), () => Assert.Contains("q8", "no q4_0 here")),
        };
        foreach (var (name, equal, different) in checks)
        {
            try { equal(); }
            catch (Exception e) { return $"Assert over {name} threw on equal values: {e.GetType().Name}: {e.Message}"; }
            try
            {
                different();
                return $"Assert over {name} passed on different values";
            }
            catch (XunitException) { }
            catch (Exception e) { return $"Assert over {name} threw {e.GetType().Name}, not an assertion failure: {e.Message}"; }
        }
        return null;
    }

    private static string Device()
    {
        try
        {
            using var ctx = CudaContext.Create();
            var (major, minor) = NvrtcCompiler.Version();
            return $"CUDA device {ctx.Device}, nvrtc {major}.{minor}";
        }
        catch (CudaUnavailableException e) { return $"no CUDA device: {e.Reason}"; }
        catch (CudaException e) { return $"no CUDA device: {e.Message}"; }
    }

    [UnconditionalSuppressMessage("Trimming", "IL2026", Justification = "The test assembly is a trimming root (GpuTests.csproj): all its types, members and attributes are kept.")]
    [UnconditionalSuppressMessage("Trimming", "IL2075", Justification = "The test assembly is a trimming root (GpuTests.csproj): all its types, members and attributes are kept.")]
    private static List<TestCase> Discover(Assembly assembly)
    {
        var tests = new List<TestCase>();
        const BindingFlags flags = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static;
        foreach (var type in assembly.GetTypes().Where(t => t.IsClass && !t.IsAbstract && !t.ContainsGenericParameters).OrderBy(t => t.FullName, StringComparer.Ordinal))
        {
            foreach (var m in type.GetMethods(flags))
            {
                var fact = m.GetCustomAttribute<FactAttribute>(inherit: true);
                if (fact is null) continue;
                var baseName = $"{type.FullName}.{m.Name}";
                if (fact is not TheoryAttribute)
                {
                    tests.Add(new TestCase(type, m, [], baseName, fact.Skip));
                    continue;
                }
                var ps = m.GetParameters();
                var rows = 0;
                foreach (var data in m.GetCustomAttributes<DataAttribute>(inherit: true))
                {
                    foreach (var row in data.GetData(m))
                    {
                        rows++;
                        var args = Convert(row, ps);
                        var shown = string.Join(", ", ps.Select((p, i) => $"{p.Name}: {Show(i < args.Length ? args[i] : null)}"));
                        tests.Add(new TestCase(type, m, args, $"{baseName}({shown})", fact.Skip ?? data.Skip));
                    }
                }
                if (rows == 0) tests.Add(new TestCase(type, m, [], baseName, fact.Skip ?? "a theory without data"));
            }
        }
        return tests;
    }

    /// <summary>Data as the parameters take it: widened or converted numbers (xunit does the same), missing optional
    /// parameters filled with their defaults.</summary>
    private static object?[] Convert(object?[] row, ParameterInfo[] ps)
    {
        var args = new object?[Math.Max(row.Length, ps.Length)];
        for (int i = 0; i < args.Length; i++)
        {
            if (i >= row.Length) { args[i] = ps[i].HasDefaultValue ? ps[i].DefaultValue : null; continue; }
            var v = row[i];
            if (i < ps.Length && v is IConvertible && v.GetType() != ps[i].ParameterType)
            {
                var target = Nullable.GetUnderlyingType(ps[i].ParameterType) ?? ps[i].ParameterType;
                if (target.IsPrimitive || target == typeof(decimal)) v = System.Convert.ChangeType(v, target, System.Globalization.CultureInfo.InvariantCulture);
            }
            args[i] = v;
        }
        return args;
    }

    private static string Show(object? v) => v switch
    {
        null => "null",
        string s => $"\"{s}\"",
        IFormattable f => f.ToString(null, System.Globalization.CultureInfo.InvariantCulture),
        _ => v.ToString() ?? "",
    };

    /// <summary>One test: a new instance, the call, the cleanup. Returns what went wrong, or null.</summary>
    private static Exception? Run(TestCase t, Dictionary<Type, object> fixtures)
    {
        object? instance = null;
        Exception? error = null;
        try
        {
            if (!t.Method.IsStatic)
            {
                instance = Create(t.Class, fixtures);
                if (instance is IAsyncLifetime life) life.InitializeAsync().GetAwaiter().GetResult();
            }
            var result = t.Method.Invoke(instance, t.Args);
            switch (result)
            {
                case Task task: task.GetAwaiter().GetResult(); break;
                case ValueTask vt: vt.GetAwaiter().GetResult(); break;
            }
        }
        catch (TargetInvocationException e) when (e.InnerException is not null) { error = e.InnerException; }
        catch (Exception e) { error = e; }
        if (instance is not null)
        {
            try
            {
                if (instance is IAsyncLifetime life) life.DisposeAsync().GetAwaiter().GetResult();
                Cleanup(instance);
            }
            catch (Exception e) { error ??= new Exception($"cleanup of {t.Class.Name} failed", e); }
        }
        return error;
    }

    [UnconditionalSuppressMessage("Trimming", "IL2070", Justification = "The test assembly is a trimming root (GpuTests.csproj): all its types, members and attributes are kept.")]
    [UnconditionalSuppressMessage("Trimming", "IL2072", Justification = "The test assembly is a trimming root (GpuTests.csproj): all its types, members and attributes are kept. (a fixture from elsewhere may lack its constructor: the test then fails saying so).")]
    private static object Create(Type type, Dictionary<Type, object> fixtures)
    {
        var ctor = type.GetConstructors().OrderByDescending(c => c.GetParameters().Length).FirstOrDefault()
            ?? throw new InvalidOperationException($"{type.FullName} has no public constructor");
        var args = ctor.GetParameters().Select(p =>
        {
            if (p.ParameterType == typeof(ITestOutputHelper)) return (object)new ConsoleOutput();
            // A class fixture (IClassFixture<T>): one instance per type for the whole run.
            if (!fixtures.TryGetValue(p.ParameterType, out var f))
            {
                f = Activator.CreateInstance(p.ParameterType)
                    ?? throw new InvalidOperationException($"cannot make {p.ParameterType.FullName} for {type.FullName}");
                if (f is IAsyncLifetime life) life.InitializeAsync().GetAwaiter().GetResult();
                fixtures[p.ParameterType] = f;
            }
            return f;
        }).ToArray();
        try { return ctor.Invoke(args); }
        catch (TargetInvocationException e) when (e.InnerException is not null) { throw e.InnerException; }
    }

    private static void Cleanup(object o)
    {
        if (o is IDisposable d) d.Dispose();
        else if (o is IAsyncDisposable ad) ad.DisposeAsync().AsTask().GetAwaiter().GetResult();
    }

    private static string Indent(string s) => string.Join('\n', s.Split('\n').Select(l => "      " + l.TrimEnd('\r')));

    /// <summary>The test's output, straight to stdout (indented under the test's line, which comes after it).</summary>
    private sealed class ConsoleOutput : ITestOutputHelper
    {
        public void WriteLine(string message) => Console.WriteLine(Indent(message));
        public void WriteLine(string format, params object[] args) => WriteLine(string.Format(System.Globalization.CultureInfo.InvariantCulture, format, args));
    }
}
