"""The six rungs of the "130x faster" case study (`../shared/reference/000_e3efb58bc798893f.txt`), as
published, and a plain-PyTorch-hook reference for their scores.

Each `rung_N` is the post's code with only these changes, each marked `# harness` or `# typo`:

* the import is nnsight_jupyter's, `remote=True` is `remote=remote` (the local tests pass False, the
  host test True) and the scores computed after the trace are collected into `scores` (the post
  calls `stats_from_logits` and drops the result);
* the post's "..." inside the patched trace is the vanilla rung's patch code, with `clean_heads`
  indexed by layer where the post made it a list (rungs 4-6);
* the post's evident typo: `new_tup = ((sub,), o_proj_inp[1])` indexes row 1 of the `.input` tensor
  (a batch of one: an IndexError in nnsight too); the second member of `.inputs` is its keyword
  arguments, so it reads `model.model.layers[layer].self_attn.o_proj.inputs[1]`.

The rungs repeat each other on purpose (the `duplicates` tool lists them): each is one of the post's
listings as published, and what is tested is that such code runs unchanged, not a refactoring of it.

`split_heads` and `stats_from_logits` are not in the post; they are written here as it describes
them. `n_layers` is a subset (the post's own loop variable); `n_heads` and `h_dim` must be the
model's, since `split_heads` uses them too.
"""

from __future__ import annotations

import torch


def split_heads(x, n_heads, h_dim):
    """[batch, seq, n_heads * h_dim] -> [batch, seq, n_heads, h_dim] (a view)."""
    return x.view(x.shape[0], x.shape[1], n_heads, h_dim)


def stats_from_logits(logits, entities):
    """Probability and logit of the top prediction and of each entity token, at the last position."""
    last = logits[:, -1]
    probs = last.softmax(-1)
    return probs.amax(-1), last.amax(-1), probs[:, entities], last[:, entities]


def rung_1_vanilla(model, clean_seq, corr_seq, entities, n_layers, n_heads, h_dim, remote=False):
    scores = []                                                          # harness
    # Outer loop over the model layers
    for layer in range(n_layers):
        # A first forward pass caches the heads' activations
        # of a single layer from the clean prompt.
        with model.trace(clean_seq, remote=remote):
            o_proj_inp = model.model.layers[layer].self_attn.o_proj.input
            clean_heads = split_heads(o_proj_inp, n_heads, h_dim).save()

        # Inner loop over the attention heads of the layer
        for head in range(n_heads):
            # Runs a forward pass for each attention head
            # on the corrupted prompt,
            # applying the corresponding head patch from the source prompt.
            with model.trace(corr_seq, remote=remote):
                o_proj_inp = model.model.layers[layer].self_attn.o_proj.input
                original_shape = o_proj_inp.shape  # [bsz, seq_len, model_dim]
                sub = split_heads(o_proj_inp, n_heads, h_dim)

                sub[:, -2, head, :] = clean_heads[:, -2, head, :]
                sub = sub.view(original_shape)
                new_tup = ((sub,), model.model.layers[layer].self_attn.o_proj.inputs[1])   # typo

                model.model.layers[layer].self_attn.o_proj.inputs = new_tup

                # Save the model logits from the entire corrupted prompt.
                logits = model.output.logits.save()

            # Transform the saved results locally
            scores.append(stats_from_logits(logits, entities))          # harness: keep the result
    return scores


def rung_2_session(model, clean_seq, corr_seq, entities, n_layers, n_heads, h_dim, remote=False):
    with model.session(remote=remote):
        results = list().save()
        for layer in range(n_layers):
            with model.trace(clean_seq):
                o_proj_inp = model.model.layers[layer].self_attn.o_proj.input
                clean_heads = split_heads(o_proj_inp, n_heads, h_dim) # no .save()

            for head in range(n_heads):
                with model.trace(corr_seq):

                    o_proj_inp = model.model.layers[layer].self_attn.o_proj.input
                    original_shape = o_proj_inp.shape
                    sub = split_heads(o_proj_inp, n_heads, h_dim)
                    sub[:, -2, head, :] = clean_heads[:, -2, head, :]
                    sub = sub.view(original_shape)
                    new_tup = ((sub,), model.model.layers[layer].self_attn.o_proj.inputs[1])   # typo
                    model.model.layers[layer].self_attn.o_proj.inputs = new_tup

                    logits = model.output.logits.to('cpu') # free memory
                    results.append(logits)

    scores = []                                                          # harness
    for logits in results:
        scores.append(stats_from_logits(logits, entities))              # harness: keep the result
    return scores


def rung_3_save_only_what_you_need(model, clean_seq, corr_seq, entities, n_layers, n_heads, h_dim, remote=False):
    with model.session(remote=remote):
        results = list().save()
        for layer in range(n_layers):
            with model.trace(clean_seq):
                o_proj_inp = model.model.layers[layer].self_attn.o_proj.input
                clean_heads = split_heads(o_proj_inp, n_heads, h_dim) # no .save()

            for head in range(n_heads):
                with model.trace(corr_seq):

                    o_proj_inp = model.model.layers[layer].self_attn.o_proj.input
                    original_shape = o_proj_inp.shape
                    sub = split_heads(o_proj_inp, n_heads, h_dim)
                    sub[:, -2, head, :] = clean_heads[:, -2, head, :]
                    sub = sub.view(original_shape)
                    new_tup = ((sub,), model.model.layers[layer].self_attn.o_proj.inputs[1])   # typo
                    model.model.layers[layer].self_attn.o_proj.inputs = new_tup

                    logits = model.output.logits

                    # transform the data here
                    results.append(stats_from_logits(logits, entities))
    return results


def rung_4_cache_in_one_go(model, clean_seq, corr_seq, entities, n_layers, n_heads, h_dim, remote=False):
    with model.session(remote=remote):
        clean_heads = list()
        with model.trace(clean_seq):
            # loop inside the trace
            for layer in range(n_layers):
                o_proj_inp = model.model.layers[layer].self_attn.o_proj.input
                clean_heads.append(split_heads(o_proj_inp, n_heads, h_dim))

        results = list().save()
        for layer in range(n_layers):
            for head in range(n_heads):
                with model.trace(corr_seq):

                    o_proj_inp = model.model.layers[layer].self_attn.o_proj.input
                    original_shape = o_proj_inp.shape
                    sub = split_heads(o_proj_inp, n_heads, h_dim)
                    sub[:, -2, head, :] = clean_heads[layer][:, -2, head, :]
                    sub = sub.view(original_shape)
                    new_tup = ((sub,), model.model.layers[layer].self_attn.o_proj.inputs[1])   # typo
                    model.model.layers[layer].self_attn.o_proj.inputs = new_tup

                    logits = model.output.logits
                    results.append(stats_from_logits(logits, entities))
    return results


def rung_5_batching(model, clean_seq, corr_seq, entities, n_layers, n_heads, h_dim, remote=False):
    with model.session(remote=remote):
        clean_heads = list()
        with model.trace(clean_seq):
            for layer in range(n_layers):
                o_proj_inp = model.model.layers[layer].self_attn.o_proj.input
                clean_heads.append(split_heads(o_proj_inp, n_heads, h_dim))

        results = list().save()
        for layer in range(n_layers):
            with model.trace() as tracer: # don't pass the input here
                for head in range(n_heads): # loop over the heads
                    with tracer.invoke(corr_seq): # input passed here

                        o_proj_inp = model.model.layers[layer].self_attn.o_proj.input
                        original_shape = o_proj_inp.shape
                        sub = split_heads(o_proj_inp, n_heads, h_dim)
                        sub[:, -2, head, :] = clean_heads[layer][:, -2, head, :]
                        sub = sub.view(original_shape)
                        new_tup = ((sub,), model.model.layers[layer].self_attn.o_proj.inputs[1])   # typo
                        model.model.layers[layer].self_attn.o_proj.inputs = new_tup

                        logits = model.output.logits
                        results.append(stats_from_logits(logits, entities))
    return results


def rung_6_skip(model, clean_seq, corr_seq, entities, n_layers, n_heads, h_dim, remote=False):
    with model.session(remote=remote):
        clean_heads = list()
        with model.trace(clean_seq):
            for layer in range(n_layers):
                o_proj_inp = model.model.layers[layer].self_attn.o_proj.input
                clean_heads.append(split_heads(o_proj_inp, n_heads, h_dim))

        # cache unpatched activations
        corr_acts = list()
        with model.trace(corr_seq):
            for layer in range(n_layers):
                corr_acts.append(model.model.layers[layer].output)

        results = list().save()
        for layer in range(n_layers):
            with model.trace() as tracer: # don't pass the input here
                for head in range(n_heads): # loop over the heads
                    with tracer.invoke(corr_seq): # input passed here
                        for layer_to_skip in range(layer):
                            # skip all the layers leading to the patch
                            model.model.layers[layer_to_skip].skip(corr_acts[layer_to_skip])

                        o_proj_inp = model.model.layers[layer].self_attn.o_proj.input
                        original_shape = o_proj_inp.shape
                        sub = split_heads(o_proj_inp, n_heads, h_dim)
                        sub[:, -2, head, :] = clean_heads[layer][:, -2, head, :]
                        sub = sub.view(original_shape)
                        new_tup = ((sub,), model.model.layers[layer].self_attn.o_proj.inputs[1])   # typo
                        model.model.layers[layer].self_attn.o_proj.inputs = new_tup

                        logits = model.output.logits
                        results.append(stats_from_logits(logits, entities))
    return results


RUNGS = [rung_1_vanilla, rung_2_session, rung_3_save_only_what_you_need, rung_4_cache_in_one_go,
         rung_5_batching, rung_6_skip]


def hook_reference(raw: torch.nn.Module, tokenizer, clean_seq, corr_seq, entities, n_layers, n_heads, h_dim):
    """Plain PyTorch: for each (layer, head), the corrupted run with that head's o_proj input at
    position -2 taken from the clean run (forward pre-hooks), scored by `stats_from_logits`."""
    clean = tokenizer(clean_seq, return_tensors="pt")
    corr = tokenizer(corr_seq, return_tensors="pt")
    scores = []
    with torch.no_grad():
        for layer in range(n_layers):
            o_proj = raw.model.layers[layer].self_attn.o_proj
            captured = {}
            hook = o_proj.register_forward_pre_hook(lambda m, args: captured.setdefault("x", args[0].clone()))
            raw(**clean)
            hook.remove()
            for head in range(n_heads):
                cols = slice(head * h_dim, (head + 1) * h_dim)

                def patch(module, args, cols=cols):
                    x = args[0].clone()
                    x[:, -2, cols] = captured["x"][:, -2, cols]
                    return (x, *args[1:])

                hook = o_proj.register_forward_pre_hook(patch)
                try:
                    logits = raw(**corr).logits
                finally:
                    hook.remove()
                scores.append(stats_from_logits(logits, entities))
    return scores


def unpatched(raw: torch.nn.Module, tokenizer, corr_seq, entities):
    """The corrupted run's scores with no patch (to show the patches change something)."""
    with torch.no_grad():
        return stats_from_logits(raw(**tokenizer(corr_seq, return_tensors="pt")).logits, entities)
