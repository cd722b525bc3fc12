"""imagegen: the domain package every Cloud Function of the product imports.

Functions stay thin (parse the transport, call a service here, map errors); everything
that knows about generations, fal.ai, Firestore or Cloud Storage lives in this package.
"""
