using Dict = System.Collections.Generic.OrderedDictionary<string, object?>;

namespace Kvq.Chat.Templates;

/// <summary>The global functions chat templates call: raise_exception, range, namespace, dict, strftime_now.</summary>
internal static class Globals
{
    /// <summary>range() longer than this is refused (a template has no business building a bigger list).</summary>
    public const int MaxRange = 1_000_000;

    public static void AddTo(Scope scope, TimeProvider clock)
    {
        scope.Set("raise_exception", new BuiltinFunction("raise_exception", args =>
        {
            var message = args.Positional.Count > 0 ? Py.Str(args.Positional[0]) : "raise_exception() was called";
            throw new ChatTemplateException(ChatTemplateErrorKind.Raised, message, args.At.Line, args.At.Column);
        }));
        scope.Set("range", new BuiltinFunction("range", Range));
        scope.Set("namespace", new BuiltinFunction("namespace", NewNamespace));
        scope.Set("dict", new BuiltinFunction("dict", args =>
        {
            var d = args.Positional.Count == 1 && args.Positional[0] is Dict source ? new Dict(source) : new Dict();
            foreach (var (k, v) in args.Keywords) d[k] = v;
            return d;
        }));
        scope.Set("strftime_now", new BuiltinFunction("strftime_now", args =>
            Strftime.Format(clock.GetLocalNow(), Py.Str(args.Check("strftime_now", "format").Required(0, "format", "strftime_now")), args.At)));
    }

    private static object Range(CallArgs args)
    {
        args.Check("range", "start", "stop", "step");
        long At(int i) => args.Positional[i] switch
        {
            long l => l,
            bool b => b ? 1 : 0,
            var v => throw args.At.Render($"range() needs integers, not '{Py.TypeName(v)}'"),
        };
        var (start, stop, step) = args.Positional.Count switch
        {
            1 => (0L, At(0), 1L),
            2 => (At(0), At(1), 1L),
            3 => (At(0), At(1), At(2)),
            _ => throw args.At.Render("range() takes 1 to 3 arguments"),
        };
        if (step == 0) throw args.At.Render("range() step must not be zero");
        var list = new List<object?>();
        for (long i = start; step > 0 ? i < stop : i > stop; i += step)
        {
            if (list.Count >= MaxRange) throw args.At.Render($"range() longer than {MaxRange} items");
            list.Add(i);
        }
        return list;
    }

    private static object NewNamespace(CallArgs args)
    {
        var ns = new Namespace();
        foreach (var source in args.Positional)
        {
            if (source is not Dict d) throw args.At.Render($"namespace() takes a mapping, not '{Py.TypeName(source)}'");
            foreach (var (k, v) in d) ns.Attributes[k] = v;
        }
        foreach (var (k, v) in args.Keywords) ns.Attributes[k] = v;
        return ns;
    }
}
