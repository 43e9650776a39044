//! The pages' words, in English and French. Each has a key; `[[pages.branding]] texts`
//! replaces any of them for one tenant. `{destination}`, `{wait}` and `{seconds}` are
//! filled in before rendering, and everything is escaped as it is written.

/// `(key, English, French)`.
pub(crate) const TEXTS: &[(&str, &str, &str)] = &[
    ("title", "Sign in", "Connexion"),
    ("sign_in_heading", "Sign in", "Connexion"),
    (
        "sign_in_intro",
        "We will send you a one-time code.",
        "Nous allons vous envoyer un code à usage unique.",
    ),
    ("label_email", "Email", "Adresse e-mail"),
    ("label_phone", "Phone number", "Numéro de téléphone"),
    (
        "label_either",
        "Email or phone number",
        "Adresse e-mail ou numéro de téléphone",
    ),
    ("send_button", "Send code", "Envoyer le code"),
    ("code_heading", "Enter your code", "Saisissez votre code"),
    (
        "code_sent_to",
        "We sent a code to {destination}.",
        "Nous avons envoyé un code à {destination}.",
    ),
    ("code_label", "Code", "Code"),
    ("verify_button", "Sign in", "Se connecter"),
    (
        "resend_button",
        "Send a new code",
        "Envoyer un nouveau code",
    ),
    (
        "resend_wait",
        "You can ask for a new code in {wait}.",
        "Vous pourrez demander un nouveau code dans {wait}.",
    ),
    (
        "resend_ready",
        "No code? You can ask for a new one.",
        "Pas de code ? Vous pouvez en demander un nouveau.",
    ),
    (
        "resent",
        "We sent a new code.",
        "Nous avons envoyé un nouveau code.",
    ),
    (
        "other_identifier",
        "Use another address",
        "Utiliser une autre adresse",
    ),
    ("sign_out_heading", "Sign out", "Déconnexion"),
    (
        "sign_out_intro",
        "Do you want to sign out?",
        "Voulez-vous vous déconnecter ?",
    ),
    ("sign_out_button", "Sign out", "Se déconnecter"),
    (
        "signed_out_heading",
        "You are signed out",
        "Vous êtes déconnecté",
    ),
    ("sign_in_again", "Sign in again", "Se reconnecter"),
    (
        "link_heading",
        "Sign in as {destination}?",
        "Se connecter en tant que {destination} ?",
    ),
    ("link_button", "Sign in", "Se connecter"),
    (
        "expired_heading",
        "This form has expired",
        "Ce formulaire a expiré",
    ),
    (
        "expired",
        "This form has expired. Start again.",
        "Ce formulaire a expiré. Recommencez.",
    ),
    ("start_again", "Start again", "Recommencer"),
    (
        "error_heading",
        "Something went wrong",
        "Un problème est survenu",
    ),
    (
        "error_invalid_code",
        "That code is not right, or it has expired. Check it and try again, or ask for a new code.",
        "Ce code n’est pas bon ou a expiré. Vérifiez-le et réessayez, ou demandez un nouveau code.",
    ),
    (
        "error_code_required",
        "Enter the code we sent you.",
        "Saisissez le code que nous vous avons envoyé.",
    ),
    (
        "error_identifier_required",
        "Enter your email address or phone number.",
        "Saisissez votre adresse e-mail ou votre numéro de téléphone.",
    ),
    (
        "error_too_many_attempts",
        "Too many tries. You can try again in {wait}.",
        "Trop d’essais. Vous pourrez réessayer dans {wait}.",
    ),
    (
        "error_invalid_email",
        "Enter a valid email address, like name@example.com.",
        "Saisissez une adresse e-mail valide, comme nom@exemple.fr.",
    ),
    (
        "error_invalid_phone",
        "Enter a phone number with its country code, like +44 7700 900123.",
        "Saisissez un numéro de téléphone avec l’indicatif du pays, comme +33 6 12 34 56 78.",
    ),
    (
        "error_email_disabled",
        "Codes cannot be sent by email here. Use your phone number.",
        "Les codes ne peuvent pas être envoyés par e-mail ici. Utilisez votre numéro de téléphone.",
    ),
    (
        "error_sms_disabled",
        "Codes cannot be sent by text message here. Use your email address.",
        "Les codes ne peuvent pas être envoyés par SMS ici. Utilisez votre adresse e-mail.",
    ),
    (
        "error_sms_country",
        "Codes cannot be sent by text message to numbers from this country. Use another number or your email address.",
        "Les codes ne peuvent pas être envoyés par SMS aux numéros de ce pays. Utilisez un autre numéro ou votre adresse e-mail.",
    ),
    (
        "error_number_type",
        "Codes cannot be sent to this kind of number. Use a mobile phone number.",
        "Les codes ne peuvent pas être envoyés à ce type de numéro. Utilisez un numéro de téléphone mobile.",
    ),
    (
        "error_email_domain",
        "Codes cannot be sent to addresses at this domain. Use another email address.",
        "Les codes ne peuvent pas être envoyés aux adresses de ce domaine. Utilisez une autre adresse e-mail.",
    ),
    (
        "error_challenge_required",
        "This sign-in needs JavaScript to send a code. Turn JavaScript on and try again.",
        "Cette connexion a besoin de JavaScript pour envoyer un code. Activez JavaScript et réessayez.",
    ),
    (
        "error_challenge_invalid",
        "The browser check failed or has expired. Please try again.",
        "La vérification du navigateur a échoué ou a expiré. Veuillez réessayer.",
    ),
    (
        "challenge_noscript",
        "JavaScript is needed to sign in here: the page checks your browser before it sends a code.",
        "JavaScript est nécessaire pour se connecter ici : la page vérifie votre navigateur avant d'envoyer un code.",
    ),
    (
        "error_sends_throttled",
        "Too many codes have been sent by text message. Try again in {wait}.",
        "Trop de codes ont été envoyés par SMS. Réessayez dans {wait}.",
    ),
    (
        "error_unknown_tenant",
        "This sign-in page does not exist. Check the address and try again.",
        "Cette page de connexion n’existe pas. Vérifiez l’adresse et réessayez.",
    ),
    (
        "error_account_not_found",
        "No account found. Please sign up first.",
        "Aucun compte trouvé. Inscrivez-vous d’abord.",
    ),
    (
        "error_invalid_link",
        "This sign-in link is not valid. Start again to get a new code.",
        "Ce lien de connexion n’est pas valide. Recommencez pour recevoir un nouveau code.",
    ),
    (
        "error_invalid_request",
        "Something in the form was missing or not right. Try again.",
        "Il manque quelque chose dans le formulaire, ou ce n’est pas correct. Réessayez.",
    ),
    (
        "error_unavailable",
        "Something went wrong on our side. Try again in a moment.",
        "Un problème est survenu de notre côté. Réessayez dans un instant.",
    ),
    (
        "error_method",
        "This page cannot be used that way.",
        "Cette page ne peut pas être utilisée ainsi.",
    ),
    (
        "error_media_type",
        "This form was sent in a way the page does not understand. Start again.",
        "Ce formulaire a été envoyé d’une façon que la page ne comprend pas. Recommencez.",
    ),
    (
        "error_not_found",
        "There is no page here.",
        "Il n’y a pas de page ici.",
    ),
    (
        "error_no_cookie",
        "Signing in from a browser needs the session cookie, which is turned off.",
        "La connexion depuis un navigateur a besoin du cookie de session, qui est désactivé.",
    ),
    ("seconds_one", "1 second", "1 seconde"),
    ("seconds_many", "{n} seconds", "{n} secondes"),
    ("minutes_one", "1 minute", "1 minute"),
    ("minutes_many", "{n} minutes", "{n} minutes"),
    ("hours_one", "1 hour", "1 heure"),
    ("hours_many", "{n} hours", "{n} heures"),
];

/// Whether `key` names one of the texts.
pub(crate) fn is_key(key: &str) -> bool {
    TEXTS.iter().any(|(k, _, _)| *k == key)
}
